//! A catalog of any size for `loopmind coordinator`, without rendering
//! (bench/catalog_scale.sh runs it; the store and queue are the real ones
//! from the usual settings, `LOOPMIND_*`):
//!
//!   catalog_scale seed N PREFIX MANIFEST
//!     puts N small source objects under PREFIX in the store (64 at a time)
//!     and writes a manifest of N tracks (two targets each) to MANIFEST.
//!   catalog_scale answer REPORT
//!     takes jobs from the jobs queue and answers each at once with the
//!     result a worker would send, its report REPORT (a real report.json)
//!     renamed to the job's track: synthesised results, so the coordinator's
//!     own cost is what is measured. Stops after 60 s with no job.
//!
//!   catalog_scale stat N DIR
//!     what resume's content key costs in a folder: N files of 1 MB in DIR,
//!     each read by the folder store's `head` (its stat key: size, mtime,
//!     ctime, inode), 32 at a time as the runner does; and, for scale, the
//!     same files read whole as a checksum would.
//!
//! One JSON line per run on stdout.

use futures_util::{stream, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use loopmind_worker::config::Settings;
use loopmind_worker::job::{Job, JobResult};
use loopmind_worker::rabbitmq;
use loopmind_worker::report::TrackReport;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = Settings::load(None).expect("settings");
    match args.first().map(String::as_str) {
        Some("seed") => seed(&settings, &args[1..]).await,
        Some("answer") => answer(&settings, &args[1..]).await,
        Some("stat") => stat(&args[1..]).await,
        _ => panic!("catalog_scale seed N PREFIX MANIFEST | answer REPORT | stat N DIR"),
    }
}

async fn seed(settings: &Settings, args: &[String]) {
    let [n, prefix, manifest] = args else {
        panic!("seed N PREFIX MANIFEST");
    };
    let n: usize = n.parse().expect("N");
    let store = loopmind_worker::store::open(&settings.store)
        .await
        .expect("store");
    let started = Instant::now();
    let key = |i: usize| format!("{prefix}/t{i:06}.wav");
    let body = vec![0u8; 64];
    let puts = stream::iter((0..n).map(|i| {
        let (store, body) = (store.clone(), body.clone());
        let k = key(i);
        async move { store.put_bytes(&k, body).await.expect("put") }
    }));
    puts.buffer_unordered(64).collect::<Vec<_>>().await;
    let tracks: Vec<_> = (0..n)
        .map(|i| json!({"id": format!("t{i:06}"), "source": key(i)}))
        .collect();
    let catalog = prefix.replace('/', "-");
    let doc = json!({"catalog": catalog, "targets": ["spotify", "apple-music"], "tracks": tracks});
    std::fs::write(manifest, doc.to_string()).expect("manifest");
    println!(
        "{}",
        json!({"run": "seed", "tracks": n, "seconds": started.elapsed().as_secs_f64()})
    );
}

async fn answer(settings: &Settings, args: &[String]) {
    let [report] = args else {
        panic!("answer REPORT");
    };
    let template: TrackReport =
        serde_json::from_slice(&std::fs::read(report).expect("report")).expect("a report");
    let conn = rabbitmq::connect(&settings.queue.url, "catalog_scale", || false)
        .await
        .expect("RabbitMQ");
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(500, BasicQosOptions::default())
        .await
        .expect("qos");
    rabbitmq::declare_jobs(&ch, &settings.queue)
        .await
        .expect("jobs queue");
    let out = conn.create_channel().await.expect("channel");
    let mut jobs = ch
        .basic_consume(
            settings.queue.jobs.as_str().into(),
            "catalog_scale".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let (mut answered, mut first) = (0usize, None);
    let started = Instant::now();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(60), jobs.next()).await {
        first.get_or_insert_with(Instant::now);
        let job: Job = serde_json::from_slice(&d.data).expect("a job");
        let mut report = template.clone();
        report.track = job.track.clone();
        let result = JobResult::mastered(&job, report, 0.5, (0, 0));
        let body = serde_json::to_vec(&result).expect("serialises");
        let props = rabbitmq::message_properties(&job.catalog, &job.job_id)
            .with_type(rabbitmq::RESULT.into());
        rabbitmq::publish(&out, &rabbitmq::results_queue(&job.catalog), &body, props)
            .await
            .expect("publish");
        d.ack(BasicAckOptions::default()).await.expect("ack");
        answered += 1;
    }
    let busy = first.map_or(0.0, |f| f.elapsed().as_secs_f64() - 60.0);
    println!(
        "{}",
        json!({"run": "answer", "jobs": answered, "busy_s": busy, "seconds": started.elapsed().as_secs_f64()})
    );
}

async fn stat(args: &[String]) {
    let [n, dir] = args else {
        panic!("stat N DIR");
    };
    let n: usize = n.parse().expect("N");
    let dir = std::path::Path::new(dir);
    std::fs::create_dir_all(dir.join("mixes")).expect("dir");
    let body = vec![7u8; 1 << 20];
    for i in 0..n {
        let p = dir.join(format!("mixes/t{i:06}.wav"));
        if !p.exists() {
            std::fs::write(p, &body).expect("write");
        }
    }
    let store = loopmind_worker::store::FolderStore::new(dir);
    let started = Instant::now();
    let heads = stream::iter((0..n).map(|i| {
        let store = &store;
        async move {
            use loopmind_worker::store::ObjectStore;
            store
                .head(&format!("mixes/t{i:06}.wav"))
                .await
                .expect("head")
        }
    }));
    let tags: Vec<_> = heads.buffered(32).collect().await;
    assert!(tags.iter().all(Option::is_some));
    let stat_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut sum = 0u64;
    for i in 0..n {
        let bytes = std::fs::read(dir.join(format!("mixes/t{i:06}.wav"))).expect("read");
        sum = bytes
            .iter()
            .fold(sum, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
    }
    let read_s = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"run": "stat", "files": n, "stat_key_s": stat_s, "read_whole_s": read_s,
            "stat_key_ms_per_10000": stat_s * 1e3 * 1e4 / n as f64, "checksum": sum})
    );
}
