//! What a render leaves beside its masters. Numbers are numbers, units are in
//! the field names; -inf (digital silence) is written as null.

use crate::decode::SourceInfo;
use crate::Action;
use loopmind_dsp::planning::modes::Mode;
use loopmind_dsp::process::chain::ChainSettings;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A document as LoopMind writes it (pretty JSON), proven to read back into
/// its own type first: a number JSON cannot hold would otherwise become a
/// file that `--settings`, resuming or the coordinator refuses later.
pub fn document<T: Serialize + DeserializeOwned>(value: &T) -> Result<Vec<u8>, DocumentError> {
    let body = serde_json::to_vec_pretty(value).map_err(DocumentError::Write)?;
    serde_json::from_slice::<T>(&body).map_err(DocumentError::ReadBack)?;
    Ok(body)
}

/// Why a document was not written: both are LoopMind's own fault (a value
/// JSON cannot hold), so the same job meets them again.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("cannot be written as JSON: {0}")]
    Write(serde_json::Error),
    #[error("would not read back ({0}); not written")]
    ReadBack(serde_json::Error),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InputLoudness {
    #[serde(with = "loopmind_dsp::level")]
    pub integrated_lufs: f64,
    pub lra_lu: f64,
    #[serde(with = "loopmind_dsp::level")]
    pub sample_peak_dbfs: f64,
    /// Near-ideal (16x) true peak.
    #[serde(with = "loopmind_dsp::level")]
    pub true_peak_dbtp: f64,
    /// Peak-to-loudness ratio: true peak minus integrated loudness.
    pub plr_db: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetReport {
    pub target: String,
    pub target_lufs: f64,
    pub ceiling_dbtp: f64,
    pub output_file: String,
    pub sample_rate_hz: u32,
    pub bit_depth: u16,
    #[serde(with = "loopmind_dsp::level")]
    pub integrated_lufs: f64,
    pub lra_lu: f64,
    /// Near-ideal (16x) true peak of the written file.
    #[serde(with = "loopmind_dsp::level")]
    pub true_peak_dbtp: f64,
    /// The same by BS.1770's reference interpolator (the reading of the
    /// ebur128 crate and ffmpeg's ebur128 filter).
    #[serde(with = "loopmind_dsp::level")]
    pub true_peak_bs1770_dbtp: f64,
    #[serde(with = "loopmind_dsp::level")]
    pub sample_peak_dbfs: f64,
    /// Total gain from the input to the master, before limiting.
    pub gain_db: f64,
    pub limiter_gr_max_db: f64,
    pub limiter_gr_mean_db: f64,
    /// Renders it took to land on target.
    pub passes: u32,
    /// Loudness-model evaluations the gain search made before them.
    #[serde(default)]
    pub model_passes: u32,
    /// Each section in the input and in this master.
    #[serde(default)]
    pub sections: Vec<SectionReport>,
    /// Loudest minus quietest section, as planned (input plus offsets).
    #[serde(default)]
    pub planned_contrast_lu: f64,
    /// The same, measured on this master.
    #[serde(default)]
    pub achieved_contrast_lu: f64,
    /// The master after each of its platform's codecs (empty when the
    /// target has none or the check is off).
    #[serde(default)]
    pub codecs: Vec<crate::codec::check::CodecReport>,
    /// The ceiling the master was made under when the codec check lowered
    /// it (the target's ceiling minus what the encode added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec_ceiling_dbtp: Option<f64>,
    /// Why this target has no master (its file is absent): under the codec
    /// check's `enforce`, no limiter ceiling kept every codec's decode under
    /// the target's ceiling at its loudness. The figures are the last
    /// render's; `codec_ceiling_dbtp` is the ceiling its codecs needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
    /// The loudness this master was made at where `target_lufs` was out of
    /// reach under its ceiling (or its codecs') by no more than the request's
    /// `shortfall_tolerance_lu`: the master is shipped, this much quieter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short: Option<crate::target::Shortfall>,
    /// Encoded deliverables beside the WAV (`--formats`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<crate::target::EncodedFile>,
    /// The loudness-matched A/B clips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
}

/// The same span of the raw mix and of the master, at the same loudness.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Preview {
    pub start: f64,
    pub end: f64,
    /// Both clips' integrated loudness.
    #[serde(with = "loopmind_dsp::level")]
    pub lufs: f64,
    pub mix_file: String,
    pub master_file: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SectionReport {
    pub section: String,
    pub emotion: String,
    pub start: f64,
    pub end: f64,
    /// Integrated (gated) over the section, in the input.
    #[serde(with = "loopmind_dsp::level")]
    pub input_lufs: f64,
    /// The same, in this master.
    #[serde(with = "loopmind_dsp::level")]
    pub output_lufs: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrackReport {
    #[serde(default)]
    pub schema_version: crate::schema::SchemaVersion,
    pub track: String,
    pub source: String,
    pub input: SourceInfo,
    pub input_loudness: InputLoudness,
    pub mode: Mode,
    pub targets: Vec<TargetReport>,
    pub software: String,
    /// The job that wrote this report (what resuming compares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobStamp>,
    /// Album normalisation applied: every target's loudness was shifted by
    /// the offset, the album's shared gain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album: Option<AlbumPlacement>,
    /// What a reference track contributed, and how close the match came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceReport>,
    /// The sections the plan used, in brief (master_settings.json has them all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<StructureReport>,
}

/// The track's sections in brief.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StructureReport {
    /// "detected", "arrangement" (the user's document) or "settings" (a plan given).
    pub source: String,
    pub sections: usize,
    pub mean_section_s: f64,
    /// How many sections carry each label.
    pub labels: std::collections::BTreeMap<String, usize>,
    /// How many different tones (EQ, compression, saturation, width) the
    /// plan used: neighbours of like intensity share one.
    pub distinct_tones: usize,
    /// Detection found one texture throughout (one section).
    pub one_texture: bool,
}

impl StructureReport {
    pub fn of(
        source: &str,
        plan: &[loopmind_dsp::planning::plan::SectionPlan],
        duration: f64,
    ) -> Self {
        let mut labels = std::collections::BTreeMap::new();
        for p in plan {
            *labels.entry(p.section.clone()).or_insert(0) += 1;
        }
        Self {
            source: source.to_string(),
            sections: plan.len(),
            mean_section_s: duration / plan.len().max(1) as f64,
            labels,
            distinct_tones: loopmind_dsp::planning::plan::distinct_tones(plan),
            one_texture: source == "detected"
                && plan.len() == 1
                && plan[0].section == loopmind_dsp::analysis::structure::ONE_SECTION,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorReport {
    #[serde(default)]
    pub schema_version: crate::schema::SchemaVersion,
    pub track: String,
    pub source: String,
    pub error: String,
    pub action: Action,
}

/// `master_settings.json`: the request as it entered and the plan actually
/// rendered from it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(remote = "Self")]
pub struct MasterSettings {
    #[serde(default)]
    pub schema_version: crate::schema::SchemaVersion,
    /// Every option the masters were asked with (a plan given included).
    pub request: crate::request::RenderRequest,
    /// Level the chain works at; the input is brought there first.
    pub working_lufs: f64,
    pub global: ChainSettings,
    pub targets: Vec<TargetSettings>,
    /// The section plan rendered: each section's span, character and
    /// loudness offset (ramped over 1 s around boundaries).
    pub sections: Vec<loopmind_dsp::planning::plan::SectionPlan>,
    /// The tempo found in the mix; detected boundaries sit on its beats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tempo_bpm: Option<f64>,
    /// What a reference track contributed (its match EQ is in `global`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceReport>,
}

impl Serialize for MasterSettings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MasterSettings::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for MasterSettings {
    /// Files of schema 1 (mode, sliders and codec check loose, no request)
    /// are read as today's.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = serde_json::Value::deserialize(d)?;
        if crate::schema::version_of(&v) < 2 {
            settings_v1(&mut v);
        }
        MasterSettings::deserialize(v).map_err(serde::de::Error::custom)
    }
}

/// A schema 1 `master_settings.json` as schema 2: its request made of the
/// mode, sliders and codec check it kept, and the targets it rendered.
fn settings_v1(v: &mut serde_json::Value) {
    let Some(doc) = v.as_object_mut() else {
        return;
    };
    let mut request = serde_json::Map::new();
    if let Some(serde_json::Value::Object(sliders)) = doc.remove("sliders") {
        request.extend(sliders);
    }
    for key in ["mode", "codec_check"] {
        if let Some(value) = doc.remove(key) {
            request.insert(key.into(), value);
        }
    }
    let targets = doc.get("targets").and_then(|t| t.as_array());
    let targets: Vec<serde_json::Value> = targets
        .into_iter()
        .flatten()
        .map(|t| {
            serde_json::json!({"name": t["target"], "lufs": t["target_lufs"],
                "ceiling_dbtp": t["true_peak_db"], "rate": t["sample_rate_hz"],
                "bits": t["bit_depth"], "codecs": t.get("codecs").cloned().unwrap_or_else(|| serde_json::json!([]))})
        })
        .collect();
    request.insert("targets".into(), targets.into());
    doc.insert("request".into(), request.into());
}

impl MasterSettings {
    /// The targets as rendered (each at the rate it was rendered at).
    pub fn rendered_targets(&self) -> Vec<loopmind_dsp::targets::Target> {
        self.targets
            .iter()
            .map(|t| loopmind_dsp::targets::Target {
                name: t.target.clone(),
                lufs: t.target_lufs,
                ceiling_dbtp: t.true_peak_db,
                rate: Some(t.sample_rate_hz),
                bits: t.bit_depth,
                codecs: t.codecs.clone(),
            })
            .collect()
    }

    /// The plan these masters were rendered from, to render again as it is.
    pub fn given_plan(&self) -> crate::request::GivenPlan {
        crate::request::GivenPlan {
            global: self.global.clone(),
            sections: self.sections.clone(),
            tempo_bpm: self.tempo_bpm,
        }
    }
}

/// A reference track's loudness character and what it changed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReferenceReport {
    pub source: String,
    #[serde(with = "loopmind_dsp::level")]
    pub integrated_lufs: f64,
    pub lra_lu: f64,
    pub plr_db: f64,
    /// Section contrast multiplied by this (its LRA over the mix's, limited).
    pub contrast_factor: f64,
    /// Compression ratio multiplied by this (from its PLR against the mix's).
    pub compression_factor: f64,
    /// The tonal balance's distance from the reference's (RMS over the
    /// third-octave bands of 63 Hz .. 8 kHz, level taken out, dB) without
    /// the match EQ and with it; null where the bands could not be compared.
    #[serde(default)]
    pub distance_before_db: Option<f64>,
    #[serde(default)]
    pub distance_after_db: Option<f64>,
    /// The match EQ's response at its octave centres (octave-averaged):
    /// the curve applied, where `global.match_eq` holds the filters' gains.
    #[serde(default)]
    pub applied_curve: Vec<loopmind_dsp::analysis::reference::BandGain>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TargetSettings {
    pub target: String,
    pub target_lufs: f64,
    pub true_peak_db: f64,
    pub sample_rate_hz: u32,
    pub bit_depth: u16,
    /// Gain into the limiter, from the working level.
    pub gain_db: f64,
    /// The limiter's own ceiling, at or under the target's.
    pub limit_dbtp: f64,
    pub dither_seed: u64,
    /// The platform's codecs the master was checked against.
    #[serde(default)]
    pub codecs: Vec<loopmind_dsp::targets::Codec>,
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

/// What marks a report as belonging to a job: resuming skips a track whose
/// report carries the same source ETag and settings hash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobStamp {
    pub job_id: String,
    pub source_etag: String,
    pub settings_hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecCheck;

    /// A master_settings.json as LoopMind wrote it before schema 2 (spotify
    /// and ebu-r128, cinematic, --dynamics 0.3 --amount eq=0.5
    /// --codec-check report), read as today's.
    #[test]
    fn a_schema_1_settings_file_reads_as_today() {
        let v1 = include_str!("../tests/fixtures/master_settings.v1.json");
        let s: MasterSettings = serde_json::from_str(v1).unwrap();
        let r = &s.request;
        assert_eq!(r.mode(), Mode::Cinematic);
        let sliders = r.sliders();
        assert_eq!(
            (sliders.dynamics, sliders.reactivity, sliders.amount.eq),
            (0.3, 1.0, 0.5)
        );
        assert_eq!(r.codec_check(), CodecCheck::Report);
        let names: Vec<&str> = r.targets().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["spotify", "ebu-r128"]);
        assert_eq!(r.targets()[0].codecs.len(), 2);
        assert_eq!(r.targets()[0].rate, Some(44_100));
        assert_eq!(s.rendered_targets(), r.targets());
        // Written again it is schema 2, and reads back the same.
        let again: MasterSettings = serde_json::from_slice(&document(&s).unwrap()).unwrap();
        assert_eq!(again, s);
        assert!(String::from_utf8(document(&s).unwrap())
            .unwrap()
            .contains("\"schema_version\": 2"));
    }
}
