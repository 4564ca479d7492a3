//! The messages of the pipeline: a job (one track, all its targets, so the mix
//! is decoded and analysed once) and its result.

use crate::report::{ErrorReport, TrackReport};
use loopmind_dsp::modes::Mode;
use loopmind_dsp::targets::Target;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Job {
    #[serde(default)]
    pub schema_version: crate::schema::SchemaVersion,
    /// `<catalog>/<track>@<settings hash>`: the same job twice is the same id.
    pub job_id: String,
    pub catalog: String,
    pub track: String,
    /// The mix's key in the store.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrangement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emotion_graph: Option<String>,
    pub targets: Vec<Target>,
    pub mode: Mode,
    /// Where outputs go, ending in `/`: `masters/<catalog>/<track>/`.
    pub output_prefix: String,
    /// Hash of everything that shapes the masters (see [`settings_hash`]).
    pub settings_hash: String,
    #[serde(default)]
    pub kind: JobKind,
    #[serde(default)]
    pub sliders: loopmind_dsp::plan::Sliders,
    /// For a track of an album: the album's shared loudness offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album: Option<AlbumPlacement>,
    /// A reference track's key in the store: the masters take on its tonal
    /// balance and loudness character.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// A plan to render as it is (from an earlier `master_settings.json`),
    /// instead of planning from the audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<GivenPlan>,
    /// The check of the masters after their platforms' codecs.
    #[serde(default)]
    pub codec_check: crate::codec::CodecCheck,
    /// Encoded deliverables beside each WAV.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formats: Vec<loopmind_dsp::targets::Format>,
}

/// The part of `master_settings.json` that fixes the sound: the global chain
/// and every section's span and settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GivenPlan {
    pub global: loopmind_dsp::chain::ChainSettings,
    pub sections: Vec<loopmind_dsp::plan::SectionPlan>,
    /// Carried into the new settings file (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tempo_bpm: Option<f64>,
}

/// Render the masters, or only measure the mix (an album's first pass).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    #[default]
    Render,
    Measure,
}

/// Album normalisation: every track of an album moves by the same gain, so
/// their relative levels are kept; the album as a whole lands on target.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlbumPlacement {
    pub album: String,
    /// This track's loudness minus the album's, at the input: each target's
    /// loudness is shifted by it for this track.
    pub lufs_offset: f64,
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

/// What marks a report as belonging to a job: resuming skips a track whose
/// report carries the same source ETag and settings hash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobStamp {
    pub job_id: String,
    pub source_etag: String,
    pub settings_hash: String,
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
    pub arrangement: Option<String>,
    pub emotion_graph: Option<String>,
    pub targets: Vec<Target>,
    pub mode: Mode,
    pub sliders: loopmind_dsp::plan::Sliders,
    /// The album the track belongs to (one shared loudness offset).
    pub album: Option<String>,
    pub reference: Option<String>,
    pub plan: Option<GivenPlan>,
    pub codec_check: crate::codec::CodecCheck,
    pub formats: Vec<loopmind_dsp::targets::Format>,
}

impl Job {
    /// The render job of `spec` in `catalog`, for the run `run_id`. The one
    /// rule for ids and hashes: `<catalog>/<track>@<settings hash>#<run>`;
    /// `album_key` is what fixes an album track's offset (its album and the
    /// members' sources, see the coordinator's `album::keys`).
    pub fn new(catalog: &str, run_id: &str, spec: &TrackSpec, album_key: Option<&str>) -> Job {
        let hash = settings_hash(
            &spec.targets,
            spec.mode,
            spec.sliders,
            album_key,
            spec.plan.as_ref(),
            spec.reference.as_deref(),
            (spec.codec_check, &spec.formats),
        );
        Job {
            schema_version: Default::default(),
            job_id: format!("{catalog}/{}@{hash}#{run_id}", spec.track),
            catalog: catalog.into(),
            track: spec.track.clone(),
            source: spec.source.clone(),
            arrangement: spec.arrangement.clone(),
            emotion_graph: spec.emotion_graph.clone(),
            targets: spec.targets.clone(),
            mode: spec.mode,
            output_prefix: crate::layout::track_prefix(catalog, &spec.track),
            settings_hash: hash,
            kind: JobKind::Render,
            sliders: spec.sliders,
            album: None,
            reference: spec.reference.clone(),
            plan: spec.plan.clone(),
            codec_check: spec.codec_check,
            formats: spec.formats.clone(),
        }
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

/// Longest store key a message may name.
pub const MAX_KEY: usize = 1024;

impl Job {
    pub fn output_key(&self, file: &str) -> String {
        format!("{}{file}", self.output_prefix)
    }

    /// Checks every field of a job as the coordinator made it, before
    /// anything is read or written for it: names that are safe, the output
    /// prefix the layout gives them (so no message can point a worker
    /// elsewhere), keys of sane length, targets, sliders and plan in range.
    /// The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        use crate::layout::{safe_id, track_prefix};
        for (field, v) in [("catalog", &self.catalog), ("track", &self.track)] {
            if !safe_id(v) {
                return Err(format!(
                    "{field} {:?} is not a safe name (letters, digits, - _ . up to {} bytes, not starting with a dot)",
                    crate::layout::safe_name(v),
                    crate::layout::MAX_NAME
                ));
            }
        }
        let prefix = track_prefix(&self.catalog, &self.track);
        if self.output_prefix != prefix {
            return Err(format!(
                "output_prefix must be {prefix:?} for this catalog and track"
            ));
        }
        if self.job_id.is_empty() || self.job_id.len() > 2 * MAX_KEY {
            return Err("job_id must be 1 to 2048 bytes".into());
        }
        for (field, key) in [
            ("source", Some(&self.source)),
            ("arrangement", self.arrangement.as_ref()),
            ("emotion_graph", self.emotion_graph.as_ref()),
            ("reference", self.reference.as_ref()),
        ] {
            if let Some(k) = key {
                if k.is_empty() || k.len() > MAX_KEY || k.contains('\0') {
                    return Err(format!(
                        "{field} must be a key of 1 to {MAX_KEY} bytes without NUL"
                    ));
                }
            }
        }
        if self.targets.is_empty() {
            return Err("targets: none".into());
        }
        for (i, t) in self.targets.iter().enumerate() {
            t.validate().map_err(|e| format!("targets[{i}]: {e}"))?;
            // A message's codecs are encodes a worker will run.
            if t.codecs.len() > 8 {
                return Err(format!(
                    "targets[{i}]: {} codecs (8 at most)",
                    t.codecs.len()
                ));
            }
        }
        for (i, f) in self.formats.iter().enumerate() {
            if self.formats[..i].contains(f) {
                return Err(format!("formats[{i}]: {} listed twice", f.name()));
            }
        }
        let sl = &self.sliders;
        for (field, v) in [
            ("sliders.dynamics", sl.dynamics),
            ("sliders.reactivity", sl.reactivity),
            ("sliders.amount.eq", sl.amount.eq),
            ("sliders.amount.width", sl.amount.width),
            ("sliders.amount.saturation", sl.amount.saturation),
            ("sliders.amount.compression", sl.amount.compression),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{field}: {v} is outside 0..1"));
            }
        }
        if let Some(a) = &self.album {
            if !a.lufs_offset.is_finite() || a.lufs_offset.abs() > 60.0 {
                return Err(format!(
                    "album.lufs_offset: {} is not a sane offset",
                    a.lufs_offset
                ));
            }
        }
        if let Some(p) = &self.plan {
            loopmind_dsp::plan::validate(&p.sections).map_err(|e| format!("plan: {e}"))?;
            p.global.validate().map_err(|e| format!("plan: {e}"))?;
        }
        Ok(())
    }
}

/// A stable hash of what shapes a track's masters: targets, mode, the
/// software version (a new version may master differently) and, for an album
/// track, what fixes its offset (the album's name and its members' sources).
pub fn settings_hash(
    targets: &[Target],
    mode: Mode,
    sliders: loopmind_dsp::plan::Sliders,
    album: Option<&str>,
    plan: Option<&GivenPlan>,
    reference: Option<&str>,
    codecs: (crate::codec::CodecCheck, &[loopmind_dsp::targets::Format]),
) -> String {
    let body = serde_json::to_vec(&(
        targets,
        mode,
        sliders,
        env!("CARGO_PKG_VERSION"),
        album,
        plan,
        reference,
        codecs,
    ))
    .expect("targets serialise");
    format!("{:016x}", fnv1a(&body))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

pub use crate::layout::safe_id;

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        let targets = vec![loopmind_dsp::targets::preset("spotify").unwrap()];
        Job {
            schema_version: Default::default(),
            job_id: "c/t@1".into(),
            catalog: "c".into(),
            track: "t".into(),
            source: "mixes/t.wav".into(),
            arrangement: None,
            emotion_graph: None,
            targets,
            mode: Mode::Cinematic,
            output_prefix: "masters/c/t/".into(),
            settings_hash: "1".into(),
            kind: JobKind::Render,
            sliders: Default::default(),
            album: None,
            reference: None,
            plan: None,
            codec_check: Default::default(),
            formats: Vec::new(),
        }
    }

    #[test]
    fn a_message_cannot_point_a_worker_elsewhere() {
        assert_eq!(job().validate(), Ok(()));
        type Edit = Box<dyn Fn(&mut Job)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|j| j.output_prefix = "../../etc/".into()),
                "output_prefix",
            ),
            (
                Box::new(|j| j.output_prefix = "masters/c/other/".into()),
                "output_prefix",
            ),
            (Box::new(|j| j.track = "..".into()), "track"),
            (Box::new(|j| j.catalog = "a/b".into()), "catalog"),
            (
                Box::new(|j| j.targets[0].name = "../x".into()),
                "targets[0]",
            ),
            (Box::new(|j| j.targets.clear()), "targets"),
            (
                Box::new(|j| j.formats = vec![loopmind_dsp::targets::Format::Mp3; 2]),
                "formats[1]",
            ),
            (Box::new(|j| j.source = "a\0b".into()), "source"),
            (
                Box::new(|j| j.sliders.dynamics = f64::NAN),
                "sliders.dynamics",
            ),
        ];
        for (edit, field) in cases {
            let mut j = job();
            edit(&mut j);
            let e = j.validate().unwrap_err();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn hash_stable() {
        let t = vec![loopmind_dsp::targets::preset("spotify").unwrap()];
        use crate::codec::CodecCheck;
        let h = |mode, album, check| {
            settings_hash(
                &t,
                mode,
                Default::default(),
                album,
                None,
                None,
                (check, &[][..]),
            )
        };
        let a = h(Mode::Cinematic, None, CodecCheck::Enforce);
        assert_eq!(a, h(Mode::Cinematic, None, CodecCheck::Enforce));
        assert_ne!(a, h(Mode::Transparent, None, CodecCheck::Enforce));
        assert_ne!(a, h(Mode::Cinematic, Some("album"), CodecCheck::Enforce));
        // The check can change the masters: a run with another is not "done".
        assert_ne!(a, h(Mode::Cinematic, None, CodecCheck::Report));
        let mp3 = [loopmind_dsp::targets::Format::Mp3];
        let with_mp3 = settings_hash(
            &t,
            Mode::Cinematic,
            Default::default(),
            None,
            None,
            None,
            (CodecCheck::Enforce, &mp3[..]),
        );
        assert_ne!(a, with_mp3);
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
