//! The broker's answers the worker and the coordinator decide on, read from
//! the real RabbitMQ on 127.0.0.1:5672 (guest/guest; `LOOPMIND_QUEUE__URL`
//! overrides it): decisions are taken on the reply code, so these pin which
//! code the broker sends.

use lapin::options::QueueDeclareOptions;
use lapin::protocol::AMQPSoftError;
use lapin::types::FieldTable;
use lapin::Connection;
use loopmind_worker::config::QueueSettings;
use loopmind_worker::rabbitmq;

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    format!("{tag}-{n}")
}

async fn connect(name: &str) -> Connection {
    let url = std::env::var("LOOPMIND_QUEUE__URL").unwrap_or(QueueSettings::default().url);
    let mut tries = 0;
    rabbitmq::connect(&url, name, || {
        tries += 1;
        tries > 3
    })
    .await
    .expect("RabbitMQ on 127.0.0.1:5672")
}

/// Declares `queue` on a channel of its own (a refusal closes the channel).
async fn declare(
    conn: &Connection,
    queue: &str,
    options: QueueDeclareOptions,
) -> Result<lapin::Queue, lapin::Error> {
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(queue.into(), options, FieldTable::default())
        .await
}

/// A worker drops a job only when its catalog's results queue is known to
/// be gone (NOT_FOUND); the queue there is seen as followed.
#[tokio::test]
async fn a_missing_results_queue_is_told_from_one_that_exists() {
    let conn = connect("loopmind-test-followed").await;
    let catalog = unique("followed");
    let results = rabbitmq::results_queue(&catalog);
    assert!(!rabbitmq::queue_exists(&conn, &results).await.unwrap());
    let ch = conn.create_channel().await.unwrap();
    // The dead-letter exchange the catalog's queues bind to comes with
    // the jobs queue (one of this test's own).
    let jobs = QueueSettings {
        jobs: unique("loopmind.test.jobs"),
        ..Default::default()
    };
    rabbitmq::declare_jobs(&ch, &jobs).await.unwrap();
    rabbitmq::declare_catalog(&ch, &catalog, 60).await.unwrap();
    let followed = rabbitmq::queue_exists(&conn, &results).await;
    rabbitmq::delete_catalog(&ch, &catalog).await.unwrap();
    ch.queue_delete(jobs.jobs.as_str().into(), Default::default())
        .await
        .unwrap();
    assert!(followed.unwrap());
    assert!(!rabbitmq::queue_exists(&conn, &results).await.unwrap());
    let _ = conn.close(200, "done".into()).await;
}

/// A catalog's lock is an exclusive queue: declaring it from a second
/// connection is refused with RESOURCE_LOCKED (what the coordinator reads
/// as "another coordinator runs it"); a passive declare of a missing queue
/// is NOT_FOUND.
#[tokio::test]
async fn the_broker_answers_with_the_codes_decided_on() {
    let (first, second) = (
        connect("loopmind-test-a").await,
        connect("loopmind-test-b").await,
    );
    let lock = unique("loopmind.lock.test");
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    declare(&first, &lock, exclusive).await.unwrap();
    let refused = declare(&second, &lock, exclusive).await.unwrap_err();
    assert_eq!(
        rabbitmq::soft_error(&refused),
        Some(AMQPSoftError::RESOURCELOCKED),
        "{refused}"
    );
    let _ = first.close(200, "done".into()).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let missing = declare(&second, &lock, passive).await.unwrap_err();
    assert_eq!(
        rabbitmq::soft_error(&missing),
        Some(AMQPSoftError::NOTFOUND),
        "{missing}"
    );
    let io: lapin::Error = std::io::Error::other("NOT_FOUND 404").into();
    assert_eq!(rabbitmq::soft_error(&io), None);
    let _ = second.close(200, "done".into()).await;
}

/// A result for a queue that is gone comes back (mandatory publishing)
/// instead of vanishing; one for a queue that exists is queued. A retried
/// job is a copy carrying LoopMind's count, whatever the broker counts.
#[tokio::test]
async fn an_unroutable_result_comes_back_and_tries_are_counted_by_loopmind() {
    let conn = connect("unroutable-test").await;
    let ch = rabbitmq::confirm_channel(&conn).await.unwrap();
    let props = rabbitmq::message_properties("c", "job-1");
    let gone = unique("loopmind.test.gone");
    let sent = rabbitmq::publish_confirmed(&ch, &gone, b"{}", props.clone())
        .await
        .unwrap();
    assert_eq!(sent, rabbitmq::Published::Unroutable);
    let here = unique("loopmind.test.here");
    declare(&conn, &here, QueueDeclareOptions::default())
        .await
        .unwrap();
    let sent = rabbitmq::publish_confirmed(&ch, &here, b"{}", props.clone())
        .await
        .unwrap();
    assert_eq!(sent, rabbitmq::Published::Queued);
    // The count a copy carries, with the broker's own headers dropped.
    let copy = rabbitmq::copy_properties(&props, rabbitmq::ATTEMPTS, 3);
    assert_eq!(rabbitmq::attempts(&copy), 3);
    let again = rabbitmq::copy_properties(&copy, "loopmind-handbacks", 1);
    assert_eq!(rabbitmq::attempts(&again), 3, "a hand-back keeps the count");
    let ch2 = conn.create_channel().await.unwrap();
    ch2.queue_delete(here.as_str().into(), Default::default())
        .await
        .unwrap();
}
