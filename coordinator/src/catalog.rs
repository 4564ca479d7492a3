//! `loopmind coordinator`: a catalog to jobs on RabbitMQ, then follow them to
//! the end. Resumable: a track whose report in the store carries the same
//! source ETag and settings hash is not rendered again. Dead-lettered jobs
//! (a worker crashed on them every time) are failed with an error.json.

use crate::album;
use crate::broker::publish_and_follow;
use crate::manifest::{Manifest, PlannedTrack};
use crate::summary::{Summary, TrackOutcome};
use anyhow::{bail, Context, Result};
use futures_util::{stream, StreamExt};
use loopmind_worker::config::Settings;
use loopmind_worker::job::{settings_hash, Job, JobKind, JobResult, Measurement, Status};
use loopmind_worker::process::REPORT;
use loopmind_worker::report::TrackReport;
use loopmind_worker::store::{self, ObjectStore};
use std::collections::HashMap;
use std::path::Path;
use tracing::info;

/// Largest manifest read (about 200,000 tracks of typical entries).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Store lookups in flight while validating and resuming.
const LOOKUPS: usize = 32;

pub async fn run(settings: Settings, catalog: &str) -> Result<bool> {
    let store = store::open(&settings.store).await?;
    let bytes = read_manifest(&settings, store.as_ref(), catalog).await?;
    let manifest = Manifest::parse(&bytes)?;
    let (planned, mut problems) = manifest.plan_all();
    let name = manifest.catalog.clone();
    let prefix = loopmind_worker::layout::catalog_prefix(&name);

    // Every source must exist before anything is published.
    let started = std::time::Instant::now();
    let heads: Vec<_> = stream::iter(planned.iter().map(|p| {
        let store = store.clone();
        async move {
            if p.entry.source.trim().is_empty() {
                return (p.entry.id.clone(), Ok(Some(Default::default())));
            }
            (p.entry.id.clone(), store.head(&p.entry.source).await)
        }
    }))
    .buffered(LOOKUPS)
    .collect()
    .await;
    let mut etags = HashMap::new();
    for (p, (id, h)) in planned.iter().zip(heads) {
        match h {
            Ok(Some(meta)) => {
                etags.insert(id, meta.etag);
            }
            Ok(None) => problems.push(format!(
                "track '{id}': source {} does not exist",
                store.describe(&p.entry.source)
            )),
            Err(e) => problems.push(format!("track '{id}': {e}")),
        }
    }
    // Reference tracks too, each once.
    let references: std::collections::BTreeSet<&str> = planned
        .iter()
        .filter_map(|p| p.reference.as_deref())
        .collect();
    for key in references {
        match store.head(key).await {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(format!("reference {} does not exist", store.describe(key))),
            Err(e) => problems.push(format!("reference {key}: {e}")),
        }
    }
    if !problems.is_empty() {
        bail!("invalid manifest:\n  - {}", problems.join("\n  - "));
    }
    info!(
        tracks = planned.len(),
        seconds = started.elapsed().as_secs_f64(),
        "manifest validated"
    );

    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    // An album track's settings include its album's members and their
    // sources: a changed album re-renders all of it.
    let album_keys = album::keys(planned.iter().map(|p| {
        (
            p.entry.album.as_deref(),
            p.entry.id.as_str(),
            etags[&p.entry.id].as_str(),
        )
    }));
    let jobs: Vec<Job> = planned
        .iter()
        .map(|p| {
            let key = p.entry.album.as_ref().map(|a| album_keys[a].as_str());
            make_job(&name, &run_id, p, key)
        })
        .collect();

    // Resume: skip tracks whose complete report matches this job.
    let done: Vec<Option<TrackReport>> = stream::iter(jobs.iter().map(|j| {
        let store = store.clone();
        let etag = etags[&j.track].clone();
        async move { complete_report(store.as_ref(), j, &etag).await }
    }))
    .buffered(LOOKUPS)
    .collect()
    .await;
    let mut outcomes: HashMap<String, TrackOutcome> = HashMap::new();
    let mut measured: HashMap<String, Measurement> = HashMap::new();
    let mut to_render: Vec<Job> = Vec::new();
    for (job, rep) in jobs.into_iter().zip(done) {
        match rep {
            Some(report) => {
                measured.insert(job.track.clone(), album::measurement_of(&report));
                let r = JobResult {
                    schema_version: Default::default(),
                    job_id: job.job_id.clone(),
                    catalog: name.clone(),
                    track: job.track.clone(),
                    status: Status::Mastered,
                    report: Some(report),
                    error: None,
                    measurement: None,
                    render_seconds: 0.0,
                    reason: String::new(),
                    downloaded_bytes: 0,
                    uploaded_bytes: 0,
                };
                let mut o = TrackOutcome::from_result(
                    &r,
                    &store.describe(&job.source),
                    &format!("{}/", job.track),
                );
                o.skipped = true;
                outcomes.insert(job.track.clone(), o);
            }
            None => to_render.push(job),
        }
    }
    println!(
        "catalog {name}: {} tracks, {} already complete (skipped), {} to render",
        planned.len(),
        outcomes.len(),
        to_render.len()
    );

    let mut all_results: Vec<JobResult> = Vec::new();
    if !to_render.is_empty() {
        let albums: HashMap<&str, &str> = planned
            .iter()
            .filter_map(|p| p.entry.album.as_deref().map(|a| (p.entry.id.as_str(), a)))
            .collect();
        // First pass: tracks outside albums render; album tracks to render are
        // measured, since their gain depends on the whole album.
        let (album_jobs, solo): (Vec<Job>, Vec<Job>) = to_render
            .into_iter()
            .partition(|j| albums.contains_key(j.track.as_str()));
        let mut first: Vec<Job> = solo;
        first.extend(album_jobs.iter().map(|j| {
            let mut m = j.clone();
            m.kind = JobKind::Measure;
            m.job_id = format!("{}/measure", j.job_id);
            m
        }));
        let mut conn = None;
        let results =
            publish_and_follow(&settings, &mut conn, &name, store.as_ref(), first).await?;
        all_results.extend(results.iter().cloned());
        let mut by_track = HashMap::new();
        for r in results {
            match r.status {
                Status::Measured => {
                    measured.insert(r.track.clone(), r.measurement.expect("measured result"));
                }
                _ => {
                    by_track.insert(r.track.clone(), r);
                }
            }
        }
        // Second pass: album tracks with their album's shared offset.
        let members: Vec<(&str, &str)> = albums.iter().map(|(t, a)| (*t, *a)).collect();
        let offsets = album::offsets(&members, &measured);
        let second: Vec<Job> = album_jobs
            .into_iter()
            .filter_map(|mut j| {
                let placement = offsets.get(j.track.as_str())?.clone();
                j.album = Some(placement);
                Some(j)
            })
            .collect();
        if !second.is_empty() {
            for r in publish_and_follow(&settings, &mut conn, &name, store.as_ref(), second).await?
            {
                all_results.push(r.clone());
                by_track.insert(r.track.clone(), r);
            }
        }
        if let Some(c) = conn {
            let _ = c.close(200, "catalog done".into()).await;
        }
        for p in &planned {
            if let Some(r) = by_track.get(&p.entry.id) {
                outcomes.insert(
                    p.entry.id.clone(),
                    TrackOutcome::from_result(
                        r,
                        &store.describe(&p.entry.source),
                        &format!("{}/", p.entry.id),
                    ),
                );
            }
        }
    }

    let ordered: Vec<TrackOutcome> = planned
        .iter()
        .map(|p| {
            outcomes
                .remove(&p.entry.id)
                .expect("every track has an outcome")
        })
        .collect();
    let summary = Summary::new(&name, &ordered);
    summary.print();
    totals(&all_results);
    summary.save(store.as_ref(), &prefix).await?;
    println!(
        "summary: {}",
        store.describe(&format!("{prefix}summary.html"))
    );
    Ok(summary.all_ok())
}

fn make_job(catalog: &str, run_id: &str, p: &PlannedTrack, album: Option<&str>) -> Job {
    let hash = settings_hash(
        &p.targets,
        p.mode,
        p.sliders,
        album,
        None,
        p.reference.as_deref(),
    );
    Job {
        schema_version: Default::default(),
        job_id: format!("{catalog}/{}@{hash}#{run_id}", p.entry.id),
        catalog: catalog.into(),
        track: p.entry.id.clone(),
        source: p.entry.source.clone(),
        arrangement: p.entry.arrangement.clone(),
        emotion_graph: p.entry.emotion_graph.clone(),
        targets: p.targets.clone(),
        mode: p.mode,
        output_prefix: loopmind_worker::layout::track_prefix(catalog, &p.entry.id),
        settings_hash: hash,
        kind: JobKind::Render,
        sliders: p.sliders,
        album: None,
        plan: None,
        reference: p.reference.clone(),
    }
}

async fn read_manifest(settings: &Settings, store: &dyn ObjectStore, at: &str) -> Result<Vec<u8>> {
    let too_big = |size: u64| {
        (size > MAX_MANIFEST_BYTES).then(|| {
            anyhow::anyhow!(
                "{at}: {} MiB is over the manifest limit of {} MiB",
                size >> 20,
                MAX_MANIFEST_BYTES >> 20
            )
        })
    };
    if let Some(rest) = at.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .with_context(|| format!("{at}: want s3://bucket/key"))?;
        let other;
        let store: &dyn ObjectStore = if bucket == settings.store.bucket {
            store
        } else {
            let mut s = settings.store.clone();
            s.bucket = bucket.into();
            other = loopmind_worker::s3::S3Store::new(&s).await?;
            &other
        };
        let meta = store
            .head(key)
            .await?
            .with_context(|| format!("{at}: no such object"))?;
        if let Some(e) = too_big(meta.size) {
            return Err(e);
        }
        return store
            .get_bytes(key)
            .await?
            .with_context(|| format!("{at}: no such object"));
    }
    let size = std::fs::metadata(at)
        .with_context(|| format!("reading manifest {at}"))?
        .len();
    if let Some(e) = too_big(size) {
        return Err(e);
    }
    std::fs::read(Path::new(at)).with_context(|| format!("reading manifest {at}"))
}

/// The track's report if it is complete and made from the same source and
/// settings.
async fn complete_report(store: &dyn ObjectStore, job: &Job, etag: &str) -> Option<TrackReport> {
    let bytes = store.get_bytes(&job.output_key(REPORT)).await.ok()??;
    let report: TrackReport = serde_json::from_slice(&bytes).ok()?;
    let stamp = report.job.as_ref()?;
    (stamp.settings_hash == job.settings_hash && stamp.source_etag == etag).then_some(report)
}

/// The workers' totals for this run, from their results: printed and logged.
fn totals(results: &[JobResult]) {
    if results.is_empty() {
        return;
    }
    let failed: Vec<&JobResult> = results
        .iter()
        .filter(|r| r.status == Status::Failed)
        .collect();
    let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &failed {
        *reasons
            .entry(if r.reason.is_empty() {
                "other"
            } else {
                &r.reason
            })
            .or_default() += 1;
    }
    let work: f64 = results.iter().map(|r| r.render_seconds).sum();
    let audio: f64 = results
        .iter()
        .filter_map(|r| {
            r.report
                .as_ref()
                .map(|rep| rep.input.duration_seconds)
                .or(r.measurement.map(|m| m.duration_seconds))
        })
        .sum();
    let down: u64 = results.iter().map(|r| r.downloaded_bytes).sum();
    let up: u64 = results.iter().map(|r| r.uploaded_bytes).sum();
    let reasons_text: Vec<String> = reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let realtime = if work > 0.0 { audio / work } else { 0.0 };
    println!(
        "jobs: {} ({} succeeded, {} failed{}); work {:.1} s ({:.2} s/job), realtime factor {:.1}x; downloaded {:.1} MB, uploaded {:.1} MB",
        results.len(),
        results.len() - failed.len(),
        failed.len(),
        if reasons_text.is_empty() { String::new() } else { format!(": {}", reasons_text.join(", ")) },
        work,
        work / results.len() as f64,
        realtime,
        down as f64 / 1e6,
        up as f64 / 1e6,
    );
    info!(
        jobs = results.len(),
        failed = failed.len(),
        work_seconds = work,
        realtime_factor = realtime,
        downloaded_bytes = down,
        uploaded_bytes = up,
        "catalog totals"
    );
}
