//! The messages of the pipeline: a job (one track, all its targets, so the mix
//! is decoded and analysed once) and its result.

// The stamp and the album placement are records a report carries.
pub use crate::report::{AlbumPlacement, JobStamp};
use crate::report::{ErrorReport, TrackReport};
use crate::request::RenderRequest;
use crate::request::MAX_KEY;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(remote = "Self")]
pub struct Job {
    #[serde(default)]
    pub schema_version: crate::schema::SchemaVersion,
    /// `<catalog>/<track>@<settings hash>#<run>`: the same job twice is the same id.
    pub job_id: String,
    pub catalog: String,
    pub track: String,
    /// The mix's key in the store.
    pub source: String,
    /// Where outputs go, ending in `/`: `masters/<catalog>/<track>/`.
    pub output_prefix: String,
    /// Hash of everything that shapes the masters
    /// ([`RenderRequest::settings_hash`]).
    pub settings_hash: String,
    #[serde(default)]
    pub kind: JobKind,
    /// For a track of an album: the album's shared loudness offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album: Option<AlbumPlacement>,
    /// Every option of the render, as it entered (checked as it is read).
    pub request: RenderRequest,
}

impl Serialize for Job {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Job::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Job {
    /// Messages of schema 1 (the request's options loose in the job) are
    /// read as today's.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = serde_json::Value::deserialize(d)?;
        if crate::schema::version_of(&v) < 2 {
            migrate_v1(&mut v);
        }
        Job::deserialize(v).map_err(serde::de::Error::custom)
    }
}

/// A schema 1 job message as schema 2: its render options gathered into
/// `request` (the sliders' fields flat, as the request names them).
fn migrate_v1(v: &mut serde_json::Value) {
    let Some(job) = v.as_object_mut() else {
        return;
    };
    let mut request = serde_json::Map::new();
    if let Some(serde_json::Value::Object(sliders)) = job.remove("sliders") {
        request.extend(sliders);
    }
    for key in [
        "targets",
        "mode",
        "reference",
        "arrangement",
        "emotion_graph",
        "plan",
        "codec_check",
        "formats",
    ] {
        if let Some(value) = job.remove(key) {
            request.insert(key.into(), value);
        }
    }
    job.insert("request".into(), request.into());
}

/// Render the masters, or only measure the mix (an album's first pass).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    #[default]
    Render,
    Measure,
}

/// A mix's integrated loudness and length (a measure job's answer).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Measurement {
    #[serde(with = "loopmind_dsp::level")]
    pub integrated_lufs: f64,
    pub duration_seconds: f64,
}

/// An album's integrated loudness from its tracks': their mean power,
/// weighted by length (the album played through, up to gating at the joins).
pub fn album_loudness(tracks: &[Measurement]) -> Option<f64> {
    let total: f64 = tracks.iter().map(|m| m.duration_seconds).sum();
    if tracks.is_empty() || total <= 0.0 {
        return None;
    }
    let power: f64 = tracks
        .iter()
        .map(|m| m.duration_seconds * 10f64.powf(m.integrated_lufs / 10.0))
        .sum::<f64>()
        / total;
    Some(10.0 * power.log10())
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Mastered,
    /// A measure job's success.
    Measured,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobResult {
    #[serde(default)]
    pub schema_version: crate::schema::SchemaVersion,
    pub job_id: String,
    pub catalog: String,
    pub track: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<TrackReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<Measurement>,
    pub render_seconds: f64,
    /// Why it failed, as a short class (decode, input, store_transient...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default)]
    pub downloaded_bytes: u64,
    #[serde(default)]
    pub uploaded_bytes: u64,
}

impl JobResult {
    /// A failed job's result; `bytes` moved (downloaded, uploaded).
    pub fn failed(
        job: &Job,
        error: ErrorReport,
        reason: &str,
        render_seconds: f64,
        bytes: (u64, u64),
    ) -> Self {
        JobResult {
            error: Some(error),
            reason: reason.to_string(),
            ..Self::of(job, Status::Failed, render_seconds, bytes)
        }
    }
}

/// One track of a catalog as its runner plans it, before it is a job: the
/// same for `loopmind master` (from the command line) and `loopmind
/// coordinator` (from a manifest).
#[derive(Clone, Debug, PartialEq)]
pub struct TrackSpec {
    pub track: String,
    /// The mix's key in the store.
    pub source: String,
    /// The album the track belongs to (one shared loudness offset).
    pub album: Option<String>,
    pub request: RenderRequest,
}

impl Job {
    /// The render job of `spec` in `catalog`, for the run `run_id`. The one
    /// rule for ids and hashes: `<catalog>/<track>@<settings hash>#<run>`;
    /// `album_key` is what fixes an album track's offset (its album and the
    /// members' sources, see the coordinator's `album::keys`).
    pub fn new(catalog: &str, run_id: &str, spec: &TrackSpec, album_key: Option<&str>) -> Job {
        let hash = spec.request.settings_hash(album_key);
        Job {
            schema_version: Default::default(),
            job_id: format!("{catalog}/{}@{hash}#{run_id}", spec.track),
            catalog: catalog.into(),
            track: spec.track.clone(),
            source: spec.source.clone(),
            output_prefix: crate::layout::track_prefix(catalog, &spec.track),
            settings_hash: hash,
            kind: JobKind::Render,
            album: None,
            request: spec.request.clone(),
        }
    }

    /// The run the job belongs to: its id's `#<run>` ([`crate::fence`]).
    pub fn run(&self) -> &str {
        let run = self.job_id.rsplit_once('#').map_or("", |(_, run)| run);
        // A measuring pass (`#<run>/measure`) is of the same run.
        run.split_once('/').map_or(run, |(run, _)| run)
    }

    /// The album's first pass for this job: measure the mix only.
    pub fn measure(&self) -> Job {
        Job {
            kind: JobKind::Measure,
            job_id: format!("{}/measure", self.job_id),
            ..self.clone()
        }
    }
}

impl JobResult {
    fn of(job: &Job, status: Status, render_seconds: f64, bytes: (u64, u64)) -> Self {
        JobResult {
            schema_version: Default::default(),
            job_id: job.job_id.clone(),
            catalog: job.catalog.clone(),
            track: job.track.clone(),
            status,
            report: None,
            error: None,
            measurement: None,
            render_seconds,
            reason: String::new(),
            downloaded_bytes: bytes.0,
            uploaded_bytes: bytes.1,
        }
    }

    /// A rendered job's result (or, with no work done, a resumed one).
    pub fn mastered(
        job: &Job,
        report: TrackReport,
        render_seconds: f64,
        bytes: (u64, u64),
    ) -> Self {
        Self {
            report: Some(report),
            ..Self::of(job, Status::Mastered, render_seconds, bytes)
        }
    }

    /// A measure job's result.
    pub fn measured(job: &Job, m: Measurement, render_seconds: f64, bytes: (u64, u64)) -> Self {
        Self {
            measurement: Some(m),
            ..Self::of(job, Status::Measured, render_seconds, bytes)
        }
    }
}

impl Job {
    pub fn output_key(&self, file: &str) -> String {
        format!("{}{file}", self.output_prefix)
    }

    /// Checks the job's own fields as the coordinator made them, before
    /// anything is read or written for it (its request was checked as it
    /// was read): names that are safe, the output prefix the layout gives
    /// them (so no message can point a worker elsewhere), keys of sane
    /// length, an album offset in range. The error names the field.
    pub fn validate(&self) -> Result<(), InvalidJob> {
        use crate::layout::{safe_id, track_prefix};
        for (field, v) in [("catalog", &self.catalog), ("track", &self.track)] {
            if !safe_id(v) {
                return Err(InvalidJob::UnsafeName {
                    field,
                    shown: crate::layout::safe_name(v),
                });
            }
        }
        let prefix = track_prefix(&self.catalog, &self.track);
        if self.output_prefix != prefix {
            return Err(InvalidJob::OutputPrefix { expected: prefix });
        }
        if self.job_id.is_empty() || self.job_id.len() > 2 * MAX_KEY {
            return Err(InvalidJob::JobId);
        }
        // The run names its claims' objects (crate::fence).
        let run = self.run();
        if run.is_empty() || run.len() > 64 || !run.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(InvalidJob::Run);
        }
        let k = &self.source;
        if k.is_empty() || k.len() > MAX_KEY || k.contains('\0') {
            return Err(InvalidJob::Source);
        }
        if let Some(a) = &self.album {
            if !a.lufs_offset.is_finite() || a.lufs_offset.abs() > 60.0 {
                return Err(InvalidJob::AlbumOffset(a.lufs_offset));
            }
        }
        Ok(())
    }

    /// A job message as a worker reads it: parsed (its request checked as
    /// it is read), then its own fields checked ([`Job::validate`]).
    pub fn from_message(body: &[u8]) -> Result<Job, UnreadableJob> {
        let job: Job = serde_json::from_slice(body).map_err(UnreadableJob::NotAJob)?;
        job.validate()?;
        Ok(job)
    }
}

/// A job whose own fields cannot be trusted to make keys (see
/// [`Job::validate`]); the message itself is wrong, so every try would
/// refuse it again: abort.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InvalidJob {
    #[error("{field} {shown:?} is not a safe name (letters, digits, - _ . up to {} bytes, not starting with a dot)", crate::layout::MAX_NAME)]
    UnsafeName { field: &'static str, shown: String },
    #[error("output_prefix must be {expected:?} for this catalog and track")]
    OutputPrefix { expected: String },
    #[error("job_id must be 1 to 2048 bytes")]
    JobId,
    #[error("job_id must end in #<run>, the run 1 to 64 letters and digits")]
    Run,
    #[error("source must be a key of 1 to {} bytes without NUL", MAX_KEY)]
    Source,
    #[error("album.lufs_offset: {0} is not a sane offset")]
    AlbumOffset(f64),
}

/// A message no worker may act on: not a job, or a job that fails its
/// checks. The same bytes fail the same way every time: abort.
#[derive(Debug, thiserror::Error)]
pub enum UnreadableJob {
    #[error("not a job message: {0}")]
    NotAJob(serde_json::Error),
    #[error("{0}")]
    Invalid(#[from] InvalidJob),
}

impl InvalidJob {
    pub fn action(&self) -> crate::Action {
        crate::Action::Abort
    }
}

impl UnreadableJob {
    pub fn action(&self) -> crate::Action {
        crate::Action::Abort
    }
}

pub use crate::layout::safe_id;

#[cfg(test)]
mod tests {
    use super::*;
    use loopmind_dsp::planning::modes::Mode;
    use serde_json::{json, Value};

    fn message() -> Value {
        json!({"schema_version": 2, "job_id": "c/t@1#1", "catalog": "c", "track": "t",
            "source": "mixes/t.wav", "output_prefix": "masters/c/t/", "settings_hash": "1",
            "request": {"targets": ["spotify"], "mode": "cinematic"}})
    }

    fn read(v: Value) -> Result<Job, UnreadableJob> {
        Job::from_message(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn a_message_cannot_point_a_worker_elsewhere() {
        read(message()).unwrap();
        type Edit = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|j| j["output_prefix"] = "../../etc/".into()),
                "output_prefix",
            ),
            (
                Box::new(|j| j["output_prefix"] = "masters/c/other/".into()),
                "output_prefix",
            ),
            (Box::new(|j| j["track"] = "..".into()), "track"),
            (Box::new(|j| j["catalog"] = "a/b".into()), "catalog"),
            (
                Box::new(|j| {
                    j["request"]["targets"] = json!([{"name": "../x", "lufs": -14.0,
                        "ceiling_dbtp": -1.0, "rate": null, "bits": 24}])
                }),
                "targets[0]",
            ),
            (Box::new(|j| j["request"]["targets"] = json!([])), "targets"),
            (
                Box::new(|j| j["request"]["formats"] = json!(["mp3", "mp3"])),
                "formats",
            ),
            (Box::new(|j| j["source"] = "a\0b".into()), "source"),
            (
                Box::new(|j| j["request"]["dynamics"] = 2.0.into()),
                "dynamics",
            ),
            (
                Box::new(|j| j["request"]["arrangement"] = "a\0b".into()),
                "arrangement",
            ),
        ];
        for (edit, field) in cases {
            let mut j = message();
            edit(&mut j);
            let e = read(j).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn a_schema_1_message_reads_as_today() {
        // As the coordinator of schema 1 wrote it: the options loose in the job.
        let v1 = json!({"schema_version": 1, "job_id": "c/t@1#1", "catalog": "c", "track": "t",
            "source": "mixes/t.wav", "arrangement": "a.json",
            "targets": [loopmind_dsp::targets::preset("cd").unwrap()], "mode": "lo-fi",
            "output_prefix": "masters/c/t/", "settings_hash": "1", "kind": "render",
            "sliders": {"dynamics": 0.25, "reactivity": 0.5, "amount": {"eq": 0.5,
                "width": 1.0, "saturation": 1.0, "compression": 1.0}},
            "codec_check": "report", "formats": ["flac"]});
        let job = read(v1).unwrap();
        let r = &job.request;
        assert_eq!((r.targets()[0].name.as_str(), r.mode()), ("cd", Mode::LoFi));
        assert_eq!((r.sliders().dynamics, r.sliders().amount.eq), (0.25, 0.5));
        assert_eq!(r.codec_check(), crate::codec::CodecCheck::Report);
        assert_eq!(r.formats(), &[loopmind_dsp::targets::Format::Flac]);
        assert_eq!(r.arrangement(), Some("a.json"));
        // Written again, it is schema 2 and reads back the same.
        let again: Job = serde_json::from_value(serde_json::to_value(&job).unwrap()).unwrap();
        assert_eq!(again, job);
        let newer = json!({"schema_version": 3, "job_id": "c/t@1#1"});
        let e = read(newer).unwrap_err().to_string();
        assert!(e.contains("schema_version 3 is newer"), "{e}");
    }

    #[test]
    fn album_loudness_is_the_length_weighted_mean_power() {
        let m = |l, d| Measurement {
            integrated_lufs: l,
            duration_seconds: d,
        };
        assert!((album_loudness(&[m(-14.0, 100.0), m(-14.0, 30.0)]).unwrap() + 14.0).abs() < 1e-9);
        // Equal lengths 10 dB apart: mean power (1 + 0.1) / 2.
        let l = album_loudness(&[m(-10.0, 60.0), m(-20.0, 60.0)]).unwrap();
        assert!((l - (-10.0 + 10.0 * (0.55f64).log10())).abs() < 1e-9);
        assert!(album_loudness(&[]).is_none());
    }
}
