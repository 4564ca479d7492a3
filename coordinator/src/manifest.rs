//! Catalog manifests: which tracks to master, for which targets, in which
//! mode. Validated whole before anything is published: every problem is
//! listed, not just the first.

use crate::options;
use loopmind_dsp::modes::Mode;
use loopmind_dsp::plan::{Amounts, Sliders};
use loopmind_dsp::targets::Target;
use loopmind_worker::codec::CodecCheck;
use loopmind_worker::job::safe_id;
use serde::Deserialize;
use std::collections::HashSet;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub catalog: String,
    pub targets: Vec<String>,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// 0 punchy .. 1 compressed (default 0.5).
    #[serde(default)]
    pub dynamics: Option<f64>,
    /// 0 one static setting .. 1 the full section plan (default 1).
    #[serde(default)]
    pub reactivity: Option<f64>,
    /// How much of each planned dimension to apply, e.g. {"eq": 0.5}.
    #[serde(default)]
    pub amount: Amounts,
    /// A reference track's key in the store, for every track.
    #[serde(default)]
    pub reference: Option<String>,
    /// "off", "report" or "enforce" (default): the masters after their
    /// platforms' codecs.
    #[serde(default)]
    pub codec_check: CodecCheck,
    /// Encoded deliverables beside each WAV: "wav", "aac", "mp3", "opus", "vorbis".
    #[serde(default)]
    pub formats: Vec<String>,
    pub tracks: Vec<TrackEntry>,
}

fn default_mode() -> Mode {
    Mode::Transparent
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackEntry {
    pub id: String,
    /// The mix's key in the store.
    pub source: String,
    #[serde(default)]
    pub arrangement: Option<String>,
    #[serde(default)]
    pub emotion_graph: Option<String>,
    /// Overrides the catalog's targets for this track.
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Tracks sharing an album share one loudness offset.
    #[serde(default)]
    pub album: Option<String>,
    /// Overrides the catalog's reference track for this track.
    #[serde(default)]
    pub reference: Option<String>,
}

/// A track ready to become a job.
#[derive(Clone, Debug)]
pub struct PlannedTrack {
    pub entry: TrackEntry,
    pub targets: Vec<Target>,
    pub mode: Mode,
    pub sliders: Sliders,
    /// The reference track's key, if any.
    pub reference: Option<String>,
    pub codec_check: CodecCheck,
    pub formats: Vec<loopmind_dsp::targets::Format>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid manifest:\n  - {}", .0.join("\n  - "))]
pub struct ManifestError(pub Vec<String>);

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ManifestError(vec![format!("not a valid manifest: {e}")]))
    }

    /// Checks everything that can be checked without the store; returns the
    /// tracks with their resolved targets, or every problem found.
    #[cfg(test)]
    pub fn plan(&self) -> Result<Vec<PlannedTrack>, ManifestError> {
        let (planned, problems) = self.plan_all();
        if problems.is_empty() {
            Ok(planned)
        } else {
            Err(ManifestError(problems))
        }
    }

    /// Every track as far as it can be planned, and every problem found (the
    /// caller adds what only the store can tell before reporting them all).
    pub fn plan_all(&self) -> (Vec<PlannedTrack>, Vec<String>) {
        let mut problems = Vec::new();
        if !safe_id(&self.catalog) {
            problems.push(format!(
                "catalog '{}': use 1-128 letters, digits, '-', '_' or '.'",
                self.catalog
            ));
        }
        if self.catalog == loopmind_worker::layout::LOCAL_CATALOG {
            problems.push(format!(
                "catalog '{}' is reserved for `loopmind master`; pick another name",
                self.catalog
            ));
        }
        if self.tracks.is_empty() {
            problems.push("no tracks".into());
        }
        let resolve = |names: &[String], whose: &str, problems: &mut Vec<String>| {
            if names.is_empty() {
                problems.push(format!("{whose}: no targets"));
            }
            options::targets(names, whose, problems)
        };
        let catalog_targets = resolve(&self.targets, "catalog", &mut problems);
        let sliders = options::sliders(
            self.dynamics,
            self.reactivity,
            self.amount,
            ["dynamics", "reactivity"],
            &mut problems,
        );
        let formats = options::formats(&self.formats, "formats", &mut problems);
        let mut seen = HashSet::new();
        let mut planned = Vec::new();
        for (i, t) in self.tracks.iter().enumerate() {
            let whose = format!("track {} ('{}')", i + 1, t.id);
            if !safe_id(&t.id) {
                problems.push(format!(
                    "{whose}: id must be 1-128 letters, digits, '-', '_' or '.'"
                ));
            } else if !seen.insert(t.id.clone()) {
                problems.push(format!("{whose}: duplicate id"));
            }
            if t.source.trim().is_empty() {
                problems.push(format!("{whose}: empty source"));
            }
            if t.album.as_ref().is_some_and(|a| a.trim().is_empty()) {
                problems.push(format!("{whose}: empty album name"));
            }
            let targets = match &t.targets {
                Some(names) => resolve(names, &whose, &mut problems),
                None => catalog_targets.clone(),
            };
            planned.push(PlannedTrack {
                entry: t.clone(),
                targets,
                mode: t.mode.unwrap_or(self.mode),
                sliders,
                reference: t.reference.clone().or_else(|| self.reference.clone()),
                codec_check: self.codec_check,
                formats: formats.clone(),
            });
        }
        (planned, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_listed() {
        let m = Manifest::parse(
            br#"{"catalog": "bad/name", "targets": ["spotify", "nope"], "tracks": [
                {"id": "a", "source": "mixes/a.wav"},
                {"id": "a", "source": "mixes/b.wav"},
                {"id": "../c", "source": ""},
                {"id": "d", "source": "mixes/d.wav", "targets": ["cd", "cd"]}
            ]}"#,
        )
        .unwrap();
        let e = m.plan().unwrap_err().0;
        let all = e.join("\n");
        for want in [
            "catalog 'bad/name'",
            "unknown target 'nope'",
            "duplicate id",
            "'../c'",
            "empty source",
            "'cd' listed twice",
        ] {
            assert!(all.contains(want), "missing '{want}' in:\n{all}");
        }
        let ok = Manifest::parse(
            br#"{"catalog": "c1", "targets": ["spotify"], "mode": "cinematic", "tracks": [
                {"id": "a", "source": "mixes/a.wav", "targets": ["cd"], "mode": "lo-fi"},
                {"id": "b", "source": "mixes/b.wav"}]}"#,
        )
        .unwrap()
        .plan()
        .unwrap();
        assert_eq!(ok[0].targets[0].name, "cd");
        assert_eq!(ok[0].mode, Mode::LoFi);
        assert_eq!(ok[1].targets[0].name, "spotify");
        assert_eq!(ok[1].mode, Mode::Cinematic);
        assert!(Manifest::parse(b"{\"catalog\": 1}").is_err());
    }

    #[test]
    fn reference_and_amount_come_from_the_catalog_or_the_track() {
        let ok = Manifest::parse(
            br#"{"catalog": "c1", "targets": ["spotify"], "reference": "refs/a.wav",
                 "amount": {"width": 0.5}, "tracks": [
                {"id": "a", "source": "mixes/a.wav"},
                {"id": "b", "source": "mixes/b.wav", "reference": "refs/b.flac"}]}"#,
        )
        .unwrap()
        .plan()
        .unwrap();
        assert_eq!(ok[0].reference.as_deref(), Some("refs/a.wav"));
        assert_eq!(ok[1].reference.as_deref(), Some("refs/b.flac"));
        assert_eq!(
            (ok[0].sliders.amount.width, ok[0].sliders.amount.eq),
            (0.5, 1.0)
        );
        let bad = Manifest::parse(
            br#"{"catalog": "c1", "targets": ["spotify"], "amount": {"eq": 3},
                 "tracks": [{"id": "a", "source": "mixes/a.wav"}]}"#,
        )
        .unwrap()
        .plan()
        .unwrap_err()
        .0
        .join("\n");
        assert!(bad.contains("amount.eq: 3 is outside 0..1"), "{bad}");
    }
}
