//! The messages of the pipeline: a job (one track, all its targets, so the mix
//! is decoded and analysed once) and its result.

use crate::report::{ErrorReport, TrackReport};
use loopmind_dsp::modes::Mode;
use loopmind_dsp::targets::Target;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Job {
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

impl Job {
    pub fn output_key(&self, file: &str) -> String {
        format!("{}{file}", self.output_prefix)
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
) -> String {
    let body = serde_json::to_vec(&(
        targets,
        mode,
        sliders,
        env!("CARGO_PKG_VERSION"),
        album,
        plan,
        reference,
    ))
    .expect("targets serialise");
    format!("{:016x}", fnv1a(&body))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Track ids and catalog names become parts of keys and queue names.
pub fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_safe_for_keys_and_hash_stable() {
        assert!(safe_id("t-01_a.b"));
        for bad in ["", "../x", "a/b", ".hidden", "a b", "é"] {
            assert!(!safe_id(bad), "{bad}");
        }
        let t = vec![loopmind_dsp::targets::preset("spotify").unwrap()];
        let a = settings_hash(&t, Mode::Cinematic, Default::default(), None, None, None);
        assert_eq!(
            a,
            settings_hash(&t, Mode::Cinematic, Default::default(), None, None, None)
        );
        assert_ne!(
            a,
            settings_hash(&t, Mode::Transparent, Default::default(), None, None, None)
        );
        assert_ne!(
            a,
            settings_hash(
                &t,
                Mode::Cinematic,
                Default::default(),
                Some("album"),
                None,
                None
            )
        );
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
