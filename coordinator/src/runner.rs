//! The one catalog flow, for `loopmind master` (in-process queue, folder
//! store) and `loopmind coordinator` (RabbitMQ, S3) alike (following the
//! jobs to their ends is [`follow`](crate::follow)):
//!
//! 1. every source and reference must exist (their ETags are read);
//! 2. jobs are built by one rule ([`Job::new`]) and checked by the rule
//!    workers check them with ([`Job::validate`]);
//! 3. resume: a track whose report in the store carries the same source
//!    ETag and settings hash is complete, and not rendered again;
//! 4. the catalog is taken on the queue (a second runner is refused, naming
//!    the first), jobs are published: tracks outside albums render at once,
//!    album tracks are measured first and rendered with their album's shared
//!    offset;
//! 5. every published job ends as done, failed, given up on by the queue, or
//!    timed out ([`CoordinatorSettings`]): nothing is waited for forever;
//! 6. the summary is written (retried while the store does not answer),
//!    then the catalog's queues go away.

use crate::album;
use crate::summary::{Summary, TrackOutcome};
use anyhow::{bail, Result};
use futures_util::{stream, StreamExt};
use loopmind_worker::config::Settings;
use loopmind_worker::job::{Job, JobResult, Measurement, Status, TrackSpec};
use loopmind_worker::layout;
use loopmind_worker::process::REPORT;
use loopmind_worker::queue::JobQueue;
use loopmind_worker::report::TrackReport;
use loopmind_worker::schema::{self, NewerSchema};
use loopmind_worker::store::ObjectStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Store lookups in flight while validating and resuming.
const LOOKUPS: usize = 32;

pub struct Catalog {
    pub name: String,
    pub tracks: Vec<TrackSpec>,
    /// Problems its reader found already: listed with the store's, all at once.
    pub problems: Vec<String>,
    /// (track, source) of tracks refused already: their sources are checked
    /// too, so the store's problems with them are listed as well.
    pub unplanned: Vec<(String, String)>,
    /// Tracks refused before any job (a FIFO in an input folder): failed,
    /// each with its own error, listed after the rest.
    pub refused: Vec<TrackOutcome>,
}

/// What a run did, for the caller's exit code and tests.
pub struct Finished {
    pub all_ok: bool,
}

pub async fn run(
    cat: &Catalog,
    store: Arc<dyn ObjectStore>,
    queue: &mut dyn JobQueue,
    settings: &Settings,
) -> Result<Finished> {
    let name = cat.name.as_str();
    let Tags { etags, documents } = check_sources(cat, store.as_ref()).await?;
    let jobs = plan_jobs(cat, &etags, &documents)?;
    let Resumed {
        mut outcomes,
        mut measured,
        to_render,
    } = resume(jobs, store.clone(), &etags).await?;
    println!(
        "{}: {} tracks, {} already complete and unchanged (same source and settings: skipped), {} to render",
        if name == layout::LOCAL_CATALOG { "batch".to_string() } else { format!("catalog {name}") },
        cat.tracks.len(),
        outcomes.len(),
        to_render.len()
    );
    if to_render.is_empty() {
        let ordered = ordered(cat, &mut outcomes);
        return finish(name, &ordered, &Totals::default(), store.as_ref(), settings).await;
    }
    let mut follower = crate::follow::Follower::new(queue, store.clone(), settings, name).await?;
    let mut followed = Followed {
        totals: Totals::default(),
        outcomes,
        sources: cat
            .tracks
            .iter()
            .map(|t| (t.track.as_str(), store.describe(&t.source)))
            .collect(),
    };
    render_all(cat, &mut follower, to_render, &mut measured, &mut followed).await?;
    let Followed {
        totals,
        mut outcomes,
        ..
    } = followed;
    let ordered = ordered(cat, &mut outcomes);
    let finished = finish(name, &ordered, &totals, store.as_ref(), settings).await;
    follower.close(finished.is_ok()).await;
    finished
}

/// The catalog's jobs, one per track, by the one rule ([`Job::new`]) for
/// this run, each checked as workers check it; or every problem.
fn plan_jobs(
    cat: &Catalog,
    etags: &HashMap<String, String>,
    documents: &HashMap<String, String>,
) -> Result<Vec<Job>> {
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    // An album track's settings include its album's members and their
    // sources: a changed album re-renders all of it.
    let album_keys = album::keys(cat.tracks.iter().map(|t| {
        (
            t.album.as_deref(),
            t.track.as_str(),
            etags[&t.track].as_str(),
        )
    }));
    let jobs: Vec<Job> = cat
        .tracks
        .iter()
        .map(|t| {
            let album = t.album.as_ref().map(|a| album_keys[a].as_str());
            Job::new(
                &cat.name,
                &run_id,
                t,
                inputs_key(t, album, documents).as_deref(),
            )
        })
        .collect();
    let problems: Vec<String> = jobs
        .iter()
        .filter_map(|j| {
            j.validate()
                .err()
                .map(|e| format!("track '{}': {e}", j.track))
        })
        .collect();
    if !problems.is_empty() {
        bail!("invalid catalog:\n  - {}", problems.join("\n  - "));
    }
    Ok(jobs)
}

/// What resuming found: the tracks complete already (their outcomes, and
/// their loudness for their albums' offsets) and the jobs left to render.
struct Resumed {
    outcomes: HashMap<String, TrackOutcome>,
    measured: HashMap<String, Measurement>,
    to_render: Vec<Job>,
}

/// Tracks whose complete report matches their job are done; a report a
/// newer LoopMind wrote stops the run, naming every such track.
async fn resume(
    jobs: Vec<Job>,
    store: Arc<dyn ObjectStore>,
    etags: &HashMap<String, String>,
) -> Result<Resumed> {
    // Each report is cut down to what the run keeps of it as it arrives:
    // 100,000 whole reports do not fit the coordinator's memory.
    let done: Vec<Result<Option<(Measurement, TrackOutcome)>, NewerReport>> =
        stream::iter(jobs.iter().map(|j| {
            let store = store.clone();
            let etag = etags[&j.track].clone();
            async move {
                let report = complete_report(store.as_ref(), j, &etag).await?;
                Ok(report.map(|report| {
                    let m = album::measurement_of(&report);
                    let r = JobResult::mastered(j, report, 0.0, (0, 0));
                    let mut o = outcome(&r, &store.describe(&j.source));
                    o.skipped = true;
                    (m, o)
                }))
            }
        }))
        .buffered(LOOKUPS)
        .collect()
        .await;
    let mut resumed = Resumed {
        outcomes: HashMap::new(),
        measured: HashMap::new(),
        to_render: Vec::new(),
    };
    let mut newer = Vec::new();
    for (job, rep) in jobs.into_iter().zip(done) {
        match rep {
            Ok(Some((m, o))) => {
                resumed.measured.insert(job.track.clone(), m);
                resumed.outcomes.insert(job.track.clone(), o);
            }
            Ok(None) => resumed.to_render.push(job),
            Err(e) => newer.push(format!("track '{}': {e}", job.track)),
        }
    }
    if !newer.is_empty() {
        bail!("{}", newer.join("\n"));
    }
    Ok(resumed)
}

/// What a run keeps of its results: the workers' totals, and each
/// track's outcome (the last word on it; an album track's measurement is
/// not one), never the whole results.
struct Followed<'c> {
    totals: Totals,
    outcomes: HashMap<String, TrackOutcome>,
    /// Each track's source as the summary names it.
    sources: HashMap<&'c str, String>,
}

impl Followed<'_> {
    fn add(&mut self, r: JobResult) {
        self.totals.add(&r);
        let source = self
            .sources
            .get(r.track.as_str())
            .cloned()
            .unwrap_or_default();
        self.outcomes.insert(r.track.clone(), outcome(&r, &source));
    }
}

/// Renders what is left in two passes: first tracks outside albums render
/// and album tracks are measured, since their gain depends on the whole
/// album; then album tracks render with their album's shared offset.
async fn render_all(
    cat: &Catalog,
    follower: &mut crate::follow::Follower<'_>,
    to_render: Vec<Job>,
    measured: &mut HashMap<String, Measurement>,
    followed: &mut Followed<'_>,
) -> Result<()> {
    let albums: HashMap<&str, &str> = cat
        .tracks
        .iter()
        .filter_map(|t| t.album.as_deref().map(|a| (t.track.as_str(), a)))
        .collect();
    let (album_jobs, mut first): (Vec<Job>, Vec<Job>) = to_render
        .into_iter()
        .partition(|j| albums.contains_key(j.track.as_str()));
    first.extend(album_jobs.iter().map(Job::measure));
    let mut sink = |r: JobResult| match (r.status, r.measurement) {
        (Status::Measured, Some(m)) => {
            followed.totals.add(&r);
            measured.insert(r.track.clone(), m);
        }
        _ => followed.add(r),
    };
    follower.publish_and_follow(first, &mut sink).await?;
    let members: Vec<(&str, &str)> = albums.iter().map(|(t, a)| (*t, *a)).collect();
    let offsets = album::offsets(&members, measured);
    let second: Vec<Job> = album_jobs
        .into_iter()
        .filter_map(|mut j| {
            j.album = Some(offsets.get(j.track.as_str())?.clone());
            Some(j)
        })
        .collect();
    if !second.is_empty() {
        follower
            .publish_and_follow(second, &mut |r| followed.add(r))
            .await?;
    }
    Ok(())
}

fn ordered(cat: &Catalog, outcomes: &mut HashMap<String, TrackOutcome>) -> Vec<TrackOutcome> {
    let mut ordered: Vec<TrackOutcome> = cat
        .tracks
        .iter()
        .map(|t| {
            outcomes.remove(&t.track).unwrap_or_else(|| TrackOutcome {
                error: Some(
                    "no outcome (an album member whose album could not be measured)".into(),
                ),
                ..TrackOutcome::empty(&t.track, &t.source)
            })
        })
        .collect();
    ordered.extend(cat.refused.iter().cloned());
    ordered
}

/// `source` as the summary names it.
fn outcome(r: &JobResult, source: &str) -> TrackOutcome {
    TrackOutcome::from_result(r, source, &format!("{}/", r.track))
}

/// Prints and saves the summary (retrying while the store does not answer).
async fn finish(
    name: &str,
    ordered: &[TrackOutcome],
    totals: &Totals,
    store: &dyn ObjectStore,
    settings: &Settings,
) -> Result<Finished> {
    let started = Instant::now();
    let summary = Summary::new(name, ordered);
    summary.print();
    totals.print();
    let prefix = layout::catalog_prefix(name);
    let deadline = Instant::now() + Duration::from_secs(settings.coordinator.summary_retry_s);
    let mut wait = Duration::from_secs(1);
    loop {
        match summary.save(store, &prefix).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                warn!(error = %e, retry_in_s = wait.as_secs(), "cannot write the summary yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            Err(e) => bail!(
                "cannot write the summary for {} s (coordinator.summary_retry_s): {e}",
                settings.coordinator.summary_retry_s
            ),
        }
    }
    println!(
        "summary: {}",
        store.describe(&format!("{prefix}summary.html"))
    );
    info!(
        tracks = ordered.len(),
        seconds = started.elapsed().as_secs_f64(),
        "summary written"
    );
    Ok(Finished {
        all_ok: summary.all_ok(),
    })
}

/// What fixes a track's masters besides its request and its mix: its
/// album's key and the content tags of the documents and the reference it
/// names, so a changed document renders again on resume.
fn inputs_key(
    t: &TrackSpec,
    album: Option<&str>,
    documents: &HashMap<String, String>,
) -> Option<String> {
    let r = &t.request;
    let named = [r.arrangement(), r.emotion_graph(), r.reference()];
    if album.is_none() && named.iter().all(Option::is_none) {
        return None;
    }
    let tag = |k: Option<&str>| k.map(|k| documents[k].as_str());
    Some(serde_json::json!([album, named.map(tag)]).to_string())
}

/// The content tags a run plans with: each track's source's ETag, and each
/// document's and reference's by key.
struct Tags {
    etags: HashMap<String, String>,
    documents: HashMap<String, String>,
}

/// Every source, document and reference exists: their ETags, or every
/// problem.
async fn check_sources(cat: &Catalog, store: &dyn ObjectStore) -> Result<Tags> {
    let started = Instant::now();
    let sources = cat.tracks.iter().map(|t| (&t.track, &t.source));
    let sources = sources.chain(cat.unplanned.iter().map(|(t, s)| (t, s)));
    let heads: Vec<_> = stream::iter(sources.map(|(track, source)| async move {
        (track.clone(), source.clone(), store.head(source).await)
    }))
    .buffered(LOOKUPS)
    .collect()
    .await;
    let mut problems = cat.problems.clone();
    let mut etags = HashMap::new();
    for (track, source, h) in heads {
        match h {
            Ok(Some(meta)) => {
                etags.insert(track, meta.etag);
            }
            Ok(None) => problems.push(format!(
                "track '{track}': source {} does not exist",
                store.describe(&source)
            )),
            Err(e) => problems.push(format!("track '{track}': {e}")),
        }
    }
    let named: std::collections::BTreeMap<&str, &str> = cat
        .tracks
        .iter()
        .flat_map(|t| {
            let r = &t.request;
            [
                ("arrangement", r.arrangement()),
                ("emotion graph", r.emotion_graph()),
                ("reference", r.reference()),
            ]
        })
        .filter_map(|(what, key)| Some((key?, what)))
        .collect();
    let heads: Vec<_> = stream::iter(
        named
            .into_iter()
            .map(|(key, what)| async move { (key, what, store.head(key).await) }),
    )
    .buffered(LOOKUPS)
    .collect()
    .await;
    let mut documents = HashMap::new();
    for (key, what, h) in heads {
        match h {
            Ok(Some(meta)) => {
                documents.insert(key.to_string(), meta.etag);
            }
            Ok(None) => problems.push(format!("{what} {} does not exist", store.describe(key))),
            Err(e) => problems.push(format!("{what} {key}: {e}")),
        }
    }
    if !problems.is_empty() {
        bail!("invalid catalog:\n  - {}", problems.join("\n  - "));
    }
    info!(
        tracks = cat.tracks.len(),
        seconds = started.elapsed().as_secs_f64(),
        "sources checked"
    );
    Ok(Tags { etags, documents })
}

/// A track's report that a newer LoopMind wrote: resuming would misread
/// it, and so would every later run of this build (abort: only an upgrade
/// reads it).
#[derive(Debug, thiserror::Error)]
#[error("{report}: {newer}")]
struct NewerReport {
    report: String,
    newer: NewerSchema,
}

/// The track's report if it is complete and made from the same source and
/// settings; an error if a newer LoopMind wrote it. Anything else that does
/// not read as a report is rendered again.
async fn complete_report(
    store: &dyn ObjectStore,
    job: &Job,
    etag: &str,
) -> Result<Option<TrackReport>, NewerReport> {
    let key = job.output_key(REPORT);
    let Ok(Some(bytes)) = store.get_bytes(&key, layout::MAX_RECORD_BYTES).await else {
        return Ok(None);
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(None);
    };
    // Its version decides first: "newer" is told from any other misfit by
    // the number it states, not by the parser's wording.
    schema::readable(&doc).map_err(|newer| NewerReport {
        report: store.describe(&key),
        newer,
    })?;
    let Ok(report) = serde_json::from_value::<TrackReport>(doc) else {
        return Ok(None);
    };
    let Some(stamp) = report.job.as_ref() else {
        return Ok(None);
    };
    if stamp.settings_hash != job.settings_hash || stamp.source_etag != etag {
        return Ok(None);
    }
    // Complete means its masters are there too: one removed since is
    // rendered again, never listed in the summary as if it were there.
    for t in report.targets.iter().filter(|t| t.withheld.is_none()) {
        if !matches!(
            store.head(&job.output_key(&t.output_file)).await,
            Ok(Some(_))
        ) {
            warn!(track = %job.track, file = %t.output_file, "a master of a complete report is missing: rendered again");
            return Ok(None);
        }
    }
    Ok(Some(report))
}

/// The workers' totals for this run, summed from their results as they
/// come.
#[derive(Default)]
struct Totals {
    jobs: usize,
    failed: usize,
    reasons: std::collections::BTreeMap<String, usize>,
    work_seconds: f64,
    audio_seconds: f64,
    downloaded: u64,
    uploaded: u64,
}

impl Totals {
    fn add(&mut self, r: &JobResult) {
        self.jobs += 1;
        if r.status == Status::Failed {
            self.failed += 1;
            let reason = if r.reason.is_empty() {
                "other"
            } else {
                &r.reason
            };
            *self.reasons.entry(reason.to_string()).or_default() += 1;
        }
        self.work_seconds += r.render_seconds;
        self.audio_seconds += r
            .report
            .as_ref()
            .map(|rep| rep.input.duration_seconds)
            .or(r.measurement.map(|m| m.duration_seconds))
            .unwrap_or(0.0);
        self.downloaded += r.downloaded_bytes;
        self.uploaded += r.uploaded_bytes;
    }

    /// Printed and logged; nothing when no job ran.
    fn print(&self) {
        if self.jobs == 0 {
            return;
        }
        let reasons: Vec<String> = self
            .reasons
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let work = self.work_seconds;
        let realtime = if work > 0.0 {
            self.audio_seconds / work
        } else {
            0.0
        };
        println!(
            "jobs: {} ({} succeeded, {} failed{}); work {:.1} s ({:.2} s/job), realtime factor {:.1}x; downloaded {:.1} MB, uploaded {:.1} MB",
            self.jobs,
            self.jobs - self.failed,
            self.failed,
            if reasons.is_empty() { String::new() } else { format!(": {}", reasons.join(", ")) },
            work,
            work / self.jobs as f64,
            realtime,
            self.downloaded as f64 / 1e6,
            self.uploaded as f64 / 1e6,
        );
        info!(
            jobs = self.jobs,
            failed = self.failed,
            work_seconds = work,
            realtime_factor = realtime,
            downloaded_bytes = self.downloaded,
            uploaded_bytes = self.uploaded,
            "catalog totals"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopmind_worker::store::FolderStore;

    /// A report a newer LoopMind wrote stops the resume, named by the
    /// version it states, whatever else in it does not read (its fields may
    /// have changed shape ahead of `schema_version`); any other report that
    /// does not read is rendered again.
    #[tokio::test]
    async fn a_report_of_a_newer_schema_is_refused_by_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = FolderStore::new(dir.path());
        let spec = TrackSpec {
            track: "t".into(),
            source: "mixes/t.wav".into(),
            album: None,
            request: serde_json::from_value(serde_json::json!({"targets": ["spotify"]})).unwrap(),
        };
        let job = Job::new("c", "run", &spec, None);
        let key = job.output_key(REPORT);
        for body in [
            r#"{"schema_version": 3}"#,
            r#"{"track": 5, "schema_version": 3}"#,
        ] {
            store.put_bytes(&key, body.into()).await.unwrap();
            let e = complete_report(&store, &job, "etag").await.unwrap_err();
            assert_eq!(e.newer, NewerSchema { found: 3 }, "{body}");
            assert!(
                e.to_string()
                    .contains("report.json: schema_version 3 is newer"),
                "{e}"
            );
        }
        for body in [
            r#"{"schema_version": 2}"#,
            r#"{"track": 5}"#,
            r#"{"schema_version": "3"}"#,
            "not json",
        ] {
            store.put_bytes(&key, body.into()).await.unwrap();
            let got = complete_report(&store, &job, "etag").await;
            assert!(matches!(got, Ok(None)), "{body}: {got:?}");
        }
    }
}
