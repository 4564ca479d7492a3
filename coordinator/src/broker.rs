//! The coordinator's side of RabbitMQ: publishing jobs with confirms in
//! batches, and following their results and dead letters to the end, with a
//! progress bar; connections are rebuilt with backoff whenever they fail.

use anyhow::Result;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use loopmind_worker::config::Settings;
use loopmind_worker::job::{Job, JobResult, Status};
use loopmind_worker::process::ERROR;
use loopmind_worker::rabbitmq;
use loopmind_worker::report::ErrorReport;
use loopmind_worker::store::ObjectStore;
use loopmind_worker::Action;
use std::collections::HashMap;
use std::time::Duration;
use tracing::{info, warn};

/// Jobs published per batch of publisher confirms.
const BATCH: usize = 1000;

async fn connect(settings: &Settings) -> Result<Connection> {
    Ok(rabbitmq::connect(&settings.queue.url, "loopmind-coordinator", || false).await?)
}

/// Publishes `jobs` and follows them until each has a result (or was
/// dead-lettered); reuses and replaces `conn` as connections come and go.
pub async fn publish_and_follow(
    settings: &Settings,
    conn: &mut Option<Connection>,
    catalog: &str,
    store: &dyn ObjectStore,
    mut jobs: Vec<Job>,
) -> Result<Vec<JobResult>> {
    jobs.sort_by(|a, b| a.track.cmp(&b.track));
    let refs: Vec<&Job> = jobs.iter().collect();
    publish(settings, conn, catalog, &refs).await?;
    let mut pending: HashMap<String, Job> =
        jobs.into_iter().map(|j| (j.job_id.clone(), j)).collect();
    follow(settings, conn, catalog, store, &mut pending).await
}

/// Publishes every job (persistent, confirmed), reconnecting as needed.
async fn publish(
    settings: &Settings,
    conn: &mut Option<Connection>,
    catalog: &str,
    jobs: &[&Job],
) -> Result<()> {
    let bar = bar(jobs.len(), "publishing");
    let started = std::time::Instant::now();
    if conn.is_none() {
        *conn = Some(connect(settings).await?);
    }
    let mut next = 0;
    let mut delay = Duration::from_millis(200);
    while next < jobs.len() {
        let batch = &jobs[next..(next + BATCH).min(jobs.len())];
        let c = conn.as_ref().expect("connected");
        match publish_batch(c, settings, catalog, batch).await {
            Ok(()) => {
                next += batch.len();
                bar.inc(batch.len() as u64);
                delay = Duration::from_millis(200);
            }
            Err(e) => {
                // Unconfirmed: publish the batch again (duplicates are harmless).
                warn!(error = %e, "publishing interrupted, reconnecting");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                *conn = Some(connect(settings).await?);
            }
        }
    }
    bar.finish_and_clear();
    info!(
        jobs = jobs.len(),
        seconds = started.elapsed().as_secs_f64(),
        "published"
    );
    Ok(())
}

async fn publish_batch(
    conn: &Connection,
    settings: &Settings,
    catalog: &str,
    batch: &[&Job],
) -> Result<(), lapin::Error> {
    let ch = rabbitmq::confirm_channel(conn).await?;
    rabbitmq::declare_jobs(&ch, &settings.queue).await?;
    rabbitmq::declare_catalog(&ch, catalog).await?;
    let reply = rabbitmq::results_queue(catalog);
    for job in batch {
        let body = serde_json::to_vec(job).expect("job serialises");
        let props =
            rabbitmq::message_properties(catalog, &job.job_id).with_reply_to(reply.as_str().into());
        // Confirms are awaited for the whole batch below.
        let confirm = ch
            .basic_publish(
                "".into(),
                settings.queue.jobs.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await?;
        drop(confirm);
    }
    let returned = ch.wait_for_confirms().await?;
    if !returned.is_empty() {
        return Err(std::io::Error::other("broker returned published jobs").into());
    }
    let _ = ch.close(200, "batch published".into()).await;
    Ok(())
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len as u64);
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}}  {{per_sec}}  eta {{eta}}  {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// Consumes results and dead letters until every pending job has ended.
async fn follow(
    settings: &Settings,
    conn: &mut Option<Connection>,
    catalog: &str,
    store: &dyn ObjectStore,
    pending: &mut HashMap<String, Job>,
) -> Result<Vec<JobResult>> {
    let bar = bar(pending.len(), "rendering");
    let mut results = Vec::new();
    let mut delay = Duration::from_millis(200);
    while !pending.is_empty() {
        if conn.is_none() {
            *conn = Some(connect(settings).await?);
        }
        let c = conn.as_ref().expect("connected");
        match follow_on(c, settings, catalog, store, pending, &mut results, &bar).await {
            Ok(()) => break,
            Err(e) => {
                warn!(error = %e, "lost RabbitMQ while following, reconnecting");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                if let Some(old) = conn.take() {
                    let _ = old.close(200, "reconnecting".into()).await;
                }
            }
        }
    }
    bar.finish_and_clear();
    Ok(results)
}

async fn follow_on(
    conn: &Connection,
    settings: &Settings,
    catalog: &str,
    store: &dyn ObjectStore,
    pending: &mut HashMap<String, Job>,
    results: &mut Vec<JobResult>,
    bar: &ProgressBar,
) -> Result<(), lapin::Error> {
    let ch: Channel = conn.create_channel().await?;
    ch.basic_qos(100, BasicQosOptions::default()).await?;
    rabbitmq::declare_jobs(&ch, &settings.queue).await?;
    rabbitmq::declare_catalog(&ch, catalog).await?;
    let consume = |q: String| {
        let ch = ch.clone();
        async move {
            ch.basic_consume(
                q.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        }
    };
    let from_results = consume(rabbitmq::results_queue(catalog)).await?;
    let dead = consume(rabbitmq::dead_queue(catalog)).await?;
    let mut merged =
        futures_util::stream::select(from_results.map(|d| (false, d)), dead.map(|d| (true, d)));
    let mut failed = results
        .iter()
        .filter(|r| r.status == Status::Failed)
        .count();
    while !pending.is_empty() {
        let Some((is_dead, delivery)) = merged.next().await else {
            return Err(std::io::Error::other("consumers cancelled by the broker").into());
        };
        let delivery = delivery?;
        // Results of other runs, and duplicates, are dropped.
        let result = if is_dead {
            match serde_json::from_slice::<Job>(&delivery.data) {
                Ok(job) if pending.contains_key(&job.job_id) => {
                    Some(dead_lettered(settings, store, &job).await)
                }
                _ => None,
            }
        } else {
            serde_json::from_slice::<JobResult>(&delivery.data)
                .ok()
                .filter(|r| pending.contains_key(&r.job_id))
        };
        if let Some(r) = result {
            pending.remove(&r.job_id);
            if r.status == Status::Failed {
                failed += 1;
                bar.set_message(format!("{failed} failed"));
            }
            bar.inc(1);
            results.push(r);
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

/// A job the queue gave up on: error.json says so (with the last attempt's
/// error, if it could write one), and it counts as failed.
async fn dead_lettered(settings: &Settings, store: &dyn ObjectStore, job: &Job) -> JobResult {
    let last = store
        .get_bytes(&job.output_key(ERROR))
        .await
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<ErrorReport>(&b).ok())
        .map_or(
            "every attempt failed or stopped its worker".to_string(),
            |e| format!("last error: {}", e.error),
        );
    let err = ErrorReport {
        schema_version: Default::default(),
        track: job.track.clone(),
        source: store.describe(&job.source),
        error: format!(
            "gave up after the delivery limit ({}); {last}",
            settings.queue.delivery_limit
        ),
        action: Action::Abort,
    };
    let body = serde_json::to_vec_pretty(&err).expect("serialises");
    if let Err(e) = store.put_bytes(&job.output_key(ERROR), body).await {
        warn!(error = %e, track = %job.track, "cannot write error.json");
    }
    JobResult::failed(job, err, "dead_lettered", 0.0, (0, 0))
}
