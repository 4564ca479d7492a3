//! The render request: every option that changes a master, declared once.
//!
//! It enters as command-line flags (`loopmind master`, clap), a manifest's
//! fields, a job message, a settings file (all serde) and is checked as it
//! enters: deserialising runs [`RenderRequest::check`], so a job message or a
//! manifest cannot hold an invalid request, and the command line goes through
//! [`RenderRequest::checked`] before it is used. It is then carried unchanged
//! to the engine and written back inside `master_settings.json`; the settings
//! hash is made from it ([`RenderRequest::settings_hash`]).
//!
//! A manifest's track and `--settings` are layers over it: JSON objects
//! merged key by key before the one check ([`RenderRequest::from_layers`]).

use crate::codec::CodecCheck;
use loopmind_dsp::planning::modes::Mode;
use loopmind_dsp::planning::plan::{Amounts, SectionPlan, Sliders};
use loopmind_dsp::process::chain::ChainSettings;
use loopmind_dsp::targets::{self, Format, Target};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Longest store key (or path) a request may name.
pub const MAX_KEY: usize = 1024;
/// Codecs one target may ask to be checked with (each is an encode).
const MAX_CODECS: usize = 8;
/// Most targets one track renders: every preset and a few of one's own
/// (each is a master on disk and a pass of CPU; a message asking for
/// thousands is refused, not rendered).
pub const MAX_TARGETS: usize = 32;

/// Every option that changes a master. Fields are private: a value exists
/// only checked (see the module's note).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct RenderRequest {
    /// Comma-separated platform targets (see `loopmind targets`).
    #[arg(long, default_value = "")]
    #[serde(default, with = "target_list")]
    targets: Targets,
    #[arg(long, default_value = "transparent")]
    #[serde(default)]
    mode: Mode,
    /// Dynamic-range preference: 0 punchy .. 1 compressed.
    #[arg(long, default_value_t = Sliders::default().dynamics)]
    #[serde(default = "default_dynamics")]
    dynamics: f64,
    /// Emotion reactivity: 0 one static setting .. 1 the full section plan.
    #[arg(long, default_value_t = Sliders::default().reactivity)]
    #[serde(default = "default_reactivity")]
    reactivity: f64,
    /// How much of the planned EQ, width, saturation and compression to
    /// apply, 0..1 each: e.g. eq=0.5,width=0.7 (others stay at 1).
    #[arg(long, default_value = "", value_parser = Amounts::parse)]
    #[serde(default)]
    amount: Amounts,
    /// Largest loudness move one section gets, either way, in dB (0..8):
    /// 0 keeps the mix's own section contrast whatever the mode plans.
    #[arg(long, default_value_t = Sliders::default().max_section_move_db)]
    #[serde(
        default = "default_max_move",
        skip_serializing_if = "is_default_max_move"
    )]
    max_section_move_db: f64,
    /// Masters after their platforms' codecs: off, report (measure and
    /// say), enforce (also render again under a lower ceiling until every
    /// codec's decode is under the target's ceiling).
    /// (Default enforce; with --settings, the one those masters were made under.)
    #[arg(long, default_value = "enforce")]
    #[serde(default)]
    codec_check: CodecCheck,
    /// How far (LU, 0..3) a target's loudness may be out of reach under its
    /// ceiling (or the lower one its codecs need) and still ship, made at the
    /// loudness that is reachable and said so; further short, it is withheld.
    #[arg(long = "shortfall-tolerance", value_name = "LU", default_value_t = DEFAULT_SHORTFALL_TOLERANCE_LU)]
    #[serde(
        default = "default_shortfall_tolerance",
        skip_serializing_if = "is_default_shortfall_tolerance"
    )]
    shortfall_tolerance_lu: f64,
    /// Encoded deliverables beside each WAV, comma-separated: wav, flac
    /// (lossless, the WAV's rate and depth), aac, mp3, opus, vorbis (at the
    /// platform's bitrate where it streams the format; checked like the
    /// platform's codecs); all tagged.
    #[arg(long, default_value = "")]
    #[serde(default, with = "format_list")]
    formats: Formats,
    /// A reference track: the masters take on its tonal balance and
    /// loudness character (LRA, PLR).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    /// The track's arrangement (seed format); detected when not given.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    arrangement: Option<String>,
    /// The track's emotion graph (seed format); measured when not given.
    #[arg(long = "emotion")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    emotion_graph: Option<String>,
    /// A plan to render as it is (from an earlier `master_settings.json`),
    /// instead of planning from the audio.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<GivenPlan>,
}

/// The part of `master_settings.json` that fixes the sound: the global chain
/// and every section's span and settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GivenPlan {
    pub global: ChainSettings,
    pub sections: Vec<SectionPlan>,
    /// Carried into the new settings file (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tempo_bpm: Option<f64>,
}

/// What is wrong with a request: every problem, each naming its field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct RequestError(pub Vec<String>);

impl RequestError {
    fn one(problem: String) -> Self {
        Self(vec![problem])
    }
}

/// Why a request from outside was refused ([`RenderRequest::from_api`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RequestRefusal {
    /// Not a request: a field unknown, missing or of the wrong type.
    #[error("{0}")]
    Shape(String),
    /// A request whose values are out of range.
    #[error("{0}")]
    Invalid(RequestError),
}

fn default_dynamics() -> f64 {
    Sliders::default().dynamics
}
fn default_reactivity() -> f64 {
    Sliders::default().reactivity
}
fn default_max_move() -> f64 {
    Sliders::default().max_section_move_db
}
/// Left out of a request written at its default, so the settings hash of
/// every request made before the option existed stays what it was.
fn is_default_max_move(v: &f64) -> bool {
    *v == default_max_move()
}

/// A master 0.5 LU under its platform's reference plays 0.5 dB quieter at
/// most (platforms that turn quiet masters up do so by the shortfall; the
/// others leave it), under the 1 dB a listener notices between tracks.
pub const DEFAULT_SHORTFALL_TOLERANCE_LU: f64 = 0.5;
/// The largest tolerance a request may ask for.
const MAX_SHORTFALL_TOLERANCE_LU: f64 = 3.0;

fn default_shortfall_tolerance() -> f64 {
    DEFAULT_SHORTFALL_TOLERANCE_LU
}
fn is_default_shortfall_tolerance(v: &f64) -> bool {
    *v == DEFAULT_SHORTFALL_TOLERANCE_LU
}

impl Serialize for RenderRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RenderRequest::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for RenderRequest {
    /// Every deserialised request is checked: no message or document can
    /// carry one that is not.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RenderRequest::deserialize(d)?;
        r.check().map_err(serde::de::Error::custom)?;
        Ok(r)
    }
}

impl RenderRequest {
    /// The request of JSON objects laid over each other (a later one's keys
    /// win), checked.
    pub fn from_layers(layers: &[&Map<String, Value>]) -> Result<Self, RequestError> {
        let mut merged = Map::new();
        for layer in layers {
            merged.extend(layer.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        serde_json::from_value(Value::Object(merged)).map_err(|e| RequestError::one(e.to_string()))
    }

    /// The request of one JSON object, checked.
    pub fn from_json(v: Value) -> Result<Self, RequestError> {
        serde_json::from_value(v).map_err(|e| RequestError::one(e.to_string()))
    }

    /// The request of one JSON object from outside (the job API), telling
    /// a body of the wrong shape (an unknown field, a value of the wrong
    /// type or name) from one whose values are out of range.
    pub fn from_api(v: Value) -> Result<Self, RequestRefusal> {
        // The remote derive's own deserialiser: the shape only.
        let r = RenderRequest::deserialize(v).map_err(|e| RequestRefusal::Shape(e.to_string()))?;
        r.check().map_err(RequestRefusal::Invalid)?;
        Ok(r)
    }

    /// This request as a JSON object (a layer to put others over).
    pub fn to_layer(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => unreachable!("a request serialises to an object"),
        }
    }

    /// A request built outside serde (the command line), checked.
    pub fn checked(self) -> Result<Self, RequestError> {
        self.check()?;
        Ok(self)
    }

    /// Every problem of the request, each naming its field.
    fn check(&self) -> Result<(), RequestError> {
        let mut problems = Vec::new();
        if self.targets.0.is_empty() {
            problems.push("targets: none".to_string());
        }
        if !(0.0..=MAX_SHORTFALL_TOLERANCE_LU).contains(&self.shortfall_tolerance_lu) {
            problems.push(format!(
                "shortfall_tolerance_lu: {} is outside 0..{MAX_SHORTFALL_TOLERANCE_LU}",
                self.shortfall_tolerance_lu
            ));
        }
        if self.targets.0.len() > MAX_TARGETS {
            problems.push(format!(
                "targets: {} ({MAX_TARGETS} at most per track)",
                self.targets.0.len()
            ));
        }
        for (i, t) in self.targets.0.iter().enumerate() {
            if let Err(e) = t.validate() {
                problems.push(format!("targets[{i}]: {e}"));
            }
            if t.codecs.len() > MAX_CODECS {
                problems.push(format!(
                    "targets[{i}]: {} codecs ({MAX_CODECS} at most)",
                    t.codecs.len()
                ));
            }
            if self.targets.0[..i].iter().any(|o| o.name == t.name) {
                problems.push(format!("targets: target '{}' listed twice", t.name));
            }
        }
        for (field, v) in [("dynamics", self.dynamics), ("reactivity", self.reactivity)] {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("{field}: {v} is outside 0..1"));
            }
        }
        let most = loopmind_dsp::planning::plan::MAX_SECTION_GAIN_DB;
        if !(0.0..=most).contains(&self.max_section_move_db) {
            problems.push(format!(
                "max_section_move_db: {} is outside 0..{most}",
                self.max_section_move_db
            ));
        }
        if let Some((name, v)) = self.amount.out_of_range() {
            problems.push(format!("amount.{name}: {v} is outside 0..1"));
        }
        for (i, f) in self.formats.0.iter().enumerate() {
            if self.formats.0[..i].contains(f) {
                problems.push(format!("formats: format '{}' listed twice", f.name()));
            }
        }
        for (field, key) in [
            ("reference", &self.reference),
            ("arrangement", &self.arrangement),
            ("emotion_graph", &self.emotion_graph),
        ] {
            if let Some(k) = key {
                if k.is_empty() || k.len() > MAX_KEY || k.contains('\0') {
                    problems.push(format!(
                        "{field} must be a key of 1 to {MAX_KEY} bytes without NUL"
                    ));
                }
            }
        }
        if let Some(p) = &self.plan {
            if let Err(e) = loopmind_dsp::planning::plan::validate(&p.sections) {
                problems.push(format!("plan: {e}"));
            }
            if let Err(e) = p.global.validate() {
                problems.push(format!("plan: {e}"));
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(RequestError(problems)),
        }
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets.0
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }
    pub fn sliders(&self) -> Sliders {
        Sliders {
            dynamics: self.dynamics,
            reactivity: self.reactivity,
            amount: self.amount,
            max_section_move_db: self.max_section_move_db,
        }
    }
    pub fn codec_check(&self) -> CodecCheck {
        self.codec_check
    }
    pub fn shortfall_tolerance_lu(&self) -> f64 {
        self.shortfall_tolerance_lu
    }
    pub fn formats(&self) -> &[Format] {
        &self.formats.0
    }
    pub fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }
    pub fn arrangement(&self) -> Option<&str> {
        self.arrangement.as_deref()
    }
    pub fn emotion_graph(&self) -> Option<&str> {
        self.emotion_graph.as_deref()
    }
    pub fn plan(&self) -> Option<&GivenPlan> {
        self.plan.as_ref()
    }

    /// The global chain: given, or the mode's under the sliders.
    pub fn chain(&self) -> ChainSettings {
        match &self.plan {
            Some(p) => p.global.clone(),
            None => loopmind_dsp::planning::plan::global(&self.mode.chain(), self.sliders()),
        }
    }

    /// The same request naming other documents (a batch's tracks each have
    /// their own; the command line's paths made absolute), checked.
    pub fn with_documents(
        mut self,
        arrangement: Option<String>,
        emotion_graph: Option<String>,
        reference: Option<String>,
    ) -> Result<Self, RequestError> {
        (self.arrangement, self.emotion_graph, self.reference) =
            (arrangement, emotion_graph, reference);
        self.checked()
    }

    /// The same request with other targets (the command line's `--lufs`,
    /// `--rate`, `--bits` applied to them), checked.
    pub fn with_targets(mut self, targets: Vec<Target>) -> Result<Self, RequestError> {
        self.targets = Targets(targets);
        self.checked()
    }

    /// A hash of what shapes a track's masters: this request, the software
    /// version (a new version may master differently) and, for an album
    /// track, what fixes its offset (its album and the members' sources).
    pub fn settings_hash(&self, album_key: Option<&str>) -> String {
        let body = serde_json::to_vec(&(self, env!("CARGO_PKG_VERSION"), album_key))
            .expect("a request serialises");
        format!("{:016x}", loopmind_dsp::hash::fnv1a(&body))
    }
}

/// A render request with what the render child reads for it: the
/// documents it names (fetched by the job), the album's offset and the
/// decoder's limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenderInputs {
    pub request: RenderRequest,
    /// The reference track's file (the request names its key).
    pub reference: Option<PathBuf>,
    /// The arrangement document's text; sections are detected without one.
    pub arrangement: Option<String>,
    /// The emotion graph's text; intensity is measured without one.
    pub emotion: Option<String>,
    /// An album track's shared loudness offset, added to every target's.
    #[serde(default)]
    pub album_offset_lu: f64,
    /// What the mix (and the reference) may ask of the decoder.
    #[serde(default)]
    pub limits: crate::decode::DecodeLimits,
    /// Threads the codec checks may use (`render.threads`, resolved).
    #[serde(default = "one_thread")]
    pub threads: usize,
}

fn one_thread() -> usize {
    1
}

impl RenderInputs {
    /// Inputs of a request that names no documents.
    pub fn of(request: RenderRequest, limits: crate::decode::DecodeLimits) -> Self {
        Self {
            request,
            reference: None,
            arrangement: None,
            emotion: None,
            album_offset_lu: 0.0,
            limits,
            threads: 1,
        }
    }

    /// The request's targets, each moved by the album's offset.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = self.request.targets().to_vec();
        for t in &mut targets {
            t.lufs += self.album_offset_lu;
        }
        targets
    }

    /// The reference to match, if the request has one and no given plan.
    pub(crate) fn matching(&self) -> Option<(&str, &Path)> {
        match (
            self.request.reference(),
            &self.reference,
            self.request.plan(),
        ) {
            (Some(name), Some(path), None) => Some((name, path)),
            _ => None,
        }
    }
}

/// The targets, each written in full (a message carries custom ones too);
/// read as a preset's name or in full; the command line's comma list.
#[derive(Clone, Debug, Default, PartialEq)]
struct Targets(Vec<Target>);

impl std::str::FromStr for Targets {
    type Err = RequestError;
    fn from_str(s: &str) -> Result<Self, RequestError> {
        let names = s.split(',').map(str::trim).filter(|n| !n.is_empty());
        names.map(preset).collect::<Result<_, _>>().map(Targets)
    }
}

fn preset(name: &str) -> Result<Target, RequestError> {
    targets::preset(name).ok_or_else(|| {
        RequestError::one(format!(
            "unknown target '{name}' (known: {})",
            targets::preset_names().join(", ")
        ))
    })
}

mod target_list {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Named {
        Name(String),
        Full(Target),
    }

    pub(super) fn serialize<S: Serializer>(t: &Targets, s: S) -> Result<S::Ok, S::Error> {
        t.0.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Targets, D::Error> {
        let items = Vec::<Named>::deserialize(d)?;
        let one = |n| match n {
            Named::Name(name) => preset(&name),
            Named::Full(t) => Ok(t),
        };
        let out = items.into_iter().map(one).collect::<Result<_, _>>();
        out.map(Targets).map_err(serde::de::Error::custom)
    }
}

/// Encoded deliverables; "wav" (always written) is taken and dropped,
/// "ogg" is Vorbis.
#[derive(Clone, Debug, Default, PartialEq)]
struct Formats(Vec<Format>);

fn format_named(name: &str) -> Result<Option<Format>, RequestError> {
    Ok(Some(match name {
        "wav" => return Ok(None),
        "flac" => Format::Flac,
        "aac" => Format::Aac,
        "mp3" => Format::Mp3,
        "opus" => Format::Opus,
        "vorbis" | "ogg" => Format::Vorbis,
        other => {
            return Err(RequestError::one(format!(
                "unknown format '{other}' (known: wav, flac, aac, mp3, opus, vorbis)"
            )))
        }
    }))
}

impl std::str::FromStr for Formats {
    type Err = RequestError;
    fn from_str(s: &str) -> Result<Self, RequestError> {
        let names = s.split(',').map(str::trim).filter(|n| !n.is_empty());
        let found: Vec<Option<Format>> = names.map(format_named).collect::<Result<_, _>>()?;
        Ok(Formats(found.into_iter().flatten().collect()))
    }
}

mod format_list {
    use super::*;

    pub(super) fn serialize<S: Serializer>(f: &Formats, s: S) -> Result<S::Ok, S::Error> {
        f.0.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Formats, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let found: Result<Vec<Option<Format>>, RequestError> =
            names.iter().map(|n| format_named(n.trim())).collect();
        let found = found.map_err(serde::de::Error::custom)?;
        Ok(Formats(found.into_iter().flatten().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    fn request(v: Value) -> Result<RenderRequest, RequestError> {
        RenderRequest::from_layers(&[&layer(v)])
    }

    #[test]
    fn names_and_defaults_read_as_the_manifest_writes_them() {
        let r = request(json!({"targets": ["spotify", {"name": "x", "lufs": -12.0,
            "ceiling_dbtp": -1.0, "rate": null, "bits": 24}], "formats": ["wav", "ogg"]}))
        .unwrap();
        assert_eq!(r.targets()[0], targets::preset("spotify").unwrap());
        assert_eq!(r.targets()[1].lufs, -12.0);
        assert_eq!(r.formats(), &[Format::Vorbis]);
        assert_eq!(r.sliders(), Sliders::default());
        // An option at its default is not written: hashes made before it
        // existed stay the same.
        assert!(!r.to_layer().contains_key("max_section_move_db"));
        assert_eq!(r.codec_check(), CodecCheck::Enforce);
        assert_eq!(r.mode(), Mode::Transparent);
        // Written in full, it reads back the same.
        let again: RenderRequest =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn every_problem_is_named_and_none_gets_through_serde() {
        let e = request(json!({"targets": ["spotify", "spotify"], "dynamics": 1.5,
            "max_section_move_db": 9.0,
            "amount": {"eq": 2.0}, "formats": ["mp3", "mp3"], "reference": ""}))
        .unwrap_err()
        .to_string();
        for want in [
            "target 'spotify' listed twice",
            "dynamics: 1.5 is outside 0..1",
            "amount.eq: 2 is outside 0..1",
            "format 'mp3' listed twice",
            "reference must be a key",
            "max_section_move_db: 9 is outside 0..8",
        ] {
            assert!(e.contains(want), "missing {want} in {e}");
        }
        let many: Vec<_> = (0..33)
            .map(|i| {
                json!({"name": format!("t{i}"), "lufs": -14.0, "ceiling_dbtp": -1.0,
                "rate": null, "bits": 24})
            })
            .collect();
        let e = request(json!({ "targets": many })).unwrap_err().to_string();
        assert!(e.contains("targets: 33 (32 at most per track)"), "{e}");
        for bad in [
            json!({"targets": []}),
            json!({"targets": ["nope"]}),
            json!({"targets": ["cd"], "colour": 1}),
            json!({"targets": [{"name": "../x", "lufs": -14.0, "ceiling_dbtp": -1.0,
                "rate": null, "bits": 24}]}),
            json!({"targets": ["cd"], "reactivity": -0.1}),
            json!({"targets": ["cd"], "max_section_move_db": -1.0}),
            json!({"targets": ["cd"], "max_section_move_db": "NaN"}),
            json!({"targets": ["cd"], "shortfall_tolerance_lu": -0.1}),
            json!({"targets": ["cd"], "shortfall_tolerance_lu": 3.5}),
        ] {
            assert!(request(bad.clone()).is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn a_later_layer_wins_key_by_key() {
        let base = layer(json!({"targets": ["spotify"], "mode": "cinematic", "dynamics": 0.2}));
        let over = layer(json!({"targets": ["cd"]}));
        let r = RenderRequest::from_layers(&[&base, &over]).unwrap();
        assert_eq!(r.targets()[0].name, "cd");
        assert_eq!((r.mode(), r.sliders().dynamics), (Mode::Cinematic, 0.2));
    }

    #[test]
    fn the_hash_follows_every_option() {
        let base = request(json!({"targets": ["spotify"]})).unwrap();
        let h = base.settings_hash(None);
        assert_eq!(h, base.clone().settings_hash(None));
        assert_ne!(h, base.settings_hash(Some("album")));
        for edit in [
            json!({"mode": "cinematic"}),
            json!({"codec_check": "report"}),
            json!({"formats": ["mp3"]}),
            json!({"amount": {"width": 0.5}}),
            json!({"reference": "refs/a.wav"}),
            json!({"arrangement": "a.json"}),
            json!({"max_section_move_db": 2.0}),
            json!({"shortfall_tolerance_lu": 0.0}),
        ] {
            let r = RenderRequest::from_layers(&[&base.to_layer(), &layer(edit.clone())]).unwrap();
            assert_ne!(r.settings_hash(None), h, "{edit} left the hash alone");
        }
    }
}
