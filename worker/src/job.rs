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
    pub render_seconds: f64,
}

impl Job {
    pub fn output_key(&self, file: &str) -> String {
        format!("{}{file}", self.output_prefix)
    }
}

/// A stable hash of what shapes a track's masters: targets, mode and the
/// software version (a new version may master differently).
pub fn settings_hash(targets: &[Target], mode: Mode) -> String {
    let body =
        serde_json::to_vec(&(targets, mode, env!("CARGO_PKG_VERSION"))).expect("targets serialise");
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
        let a = settings_hash(&t, Mode::Cinematic);
        assert_eq!(a, settings_hash(&t, Mode::Cinematic));
        assert_ne!(a, settings_hash(&t, Mode::Transparent));
    }
}
