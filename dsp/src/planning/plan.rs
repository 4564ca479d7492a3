//! The section plan: sections + intensity + mode + sliders -> each section's
//! loudness offset, EQ, compression, saturation and width.
//!
//! Loudness: a section's offset moves it away from (Cinematic: wider
//! contrast) or towards (Radio Loud: narrower) the track's level; Transparent
//! keeps the input's contrast. Tone: a section more intense than the track's
//! mean gets more of what its mode leans on (Cinematic: fuller low end, more
//! width in the chorus, narrower and darker intros). `dynamics` (0 punchy ..
//! 1 compressed) scales contrast and compression; `reactivity` (0..1) scales
//! every per-section difference: 0 gives every section the same setting;
//! `amount` scales each planned dimension towards neutral.

use crate::analysis::sections::Section;
use crate::automation::Automation;
use crate::measure::bs1770;
use crate::planning::modes::Mode;
use crate::process::chain::{ChainCurves, ChainSettings};
use crate::DspError;
use serde::{Deserialize, Serialize};

/// Largest offset a section gets, either way.
pub const MAX_SECTION_GAIN_DB: f64 = 8.0;
pub use crate::automation::RAMP_S;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sliders {
    /// 0 punchy (more contrast, less compression) .. 1 compressed.
    pub dynamics: f64,
    /// 0 one static setting .. 1 the full per-section plan.
    pub reactivity: f64,
    /// How much of each planned dimension to apply.
    #[serde(default)]
    pub amount: Amounts,
    /// Largest loudness move one section gets, either way (dB, at most
    /// [`MAX_SECTION_GAIN_DB`]): 0 keeps the mix's own contrast whatever the
    /// mode plans.
    #[serde(default = "max_section_move_default")]
    pub max_section_move_db: f64,
}

fn max_section_move_default() -> f64 {
    MAX_SECTION_GAIN_DB
}

impl Default for Sliders {
    fn default() -> Self {
        Self {
            dynamics: 0.5,
            reactivity: 1.0,
            amount: Amounts::default(),
            max_section_move_db: MAX_SECTION_GAIN_DB,
        }
    }
}

/// How much of the planned EQ, width, saturation and compression to apply,
/// 0..1 each: 0 leaves that dimension neutral (flat, 1.0 wide, clean, 1:1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Amounts {
    pub eq: f64,
    pub width: f64,
    pub saturation: f64,
    pub compression: f64,
}

impl Default for Amounts {
    fn default() -> Self {
        Self {
            eq: 1.0,
            width: 1.0,
            saturation: 1.0,
            compression: 1.0,
        }
    }
}

/// Why a text of amounts (`eq=0.5,width=0.7`) does not parse; its message
/// is what the command line shows.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum AmountsError {
    #[error("'{0}' is not name=value")]
    NotPair(String),
    #[error("{key}: '{value}' is not a number")]
    NotNumber { key: String, value: String },
    #[error("{key}: {value} is outside 0..1")]
    OutOfRange { key: String, value: f64 },
    #[error("unknown dimension '{0}' (eq, width, saturation, compression)")]
    Unknown(String),
}

impl Amounts {
    /// Parses `eq=0.5,width=0.7`; dimensions not named stay at 1.
    pub fn parse(text: &str) -> Result<Self, AmountsError> {
        let mut a = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| AmountsError::NotPair(part.to_string()))?;
            let v: f64 = value.trim().parse().map_err(|_| AmountsError::NotNumber {
                key: key.to_string(),
                value: value.to_string(),
            })?;
            if !(0.0..=1.0).contains(&v) {
                return Err(AmountsError::OutOfRange {
                    key: key.to_string(),
                    value: v,
                });
            }
            let slot = match key.trim() {
                "eq" => &mut a.eq,
                "width" => &mut a.width,
                "saturation" => &mut a.saturation,
                "compression" => &mut a.compression,
                other => return Err(AmountsError::Unknown(other.to_string())),
            };
            *slot = v;
        }
        Ok(a)
    }

    /// The first value outside 0..1, by name.
    pub fn out_of_range(&self) -> Option<(&'static str, f64)> {
        [
            ("eq", self.eq),
            ("width", self.width),
            ("saturation", self.saturation),
            ("compression", self.compression),
        ]
        .into_iter()
        .find(|(_, v)| !(0.0..=1.0).contains(v))
    }

    fn apply(&self, t: Tone) -> Tone {
        Tone {
            eq: BandGains {
                low: t.eq.low * self.eq,
                mid: t.eq.mid * self.eq,
                high: t.eq.high * self.eq,
            },
            compression: 1.0 + (t.compression - 1.0) * self.compression,
            saturation: t.saturation * self.saturation,
            width: 1.0 + (t.width - 1.0) * self.width,
        }
    }
}

/// The three EQ bands' gains in dB (corners come from the global block).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandGains {
    pub low: f64,
    pub mid: f64,
    pub high: f64,
}

/// The dimensions a section may change.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tone {
    eq: BandGains,
    compression: f64,
    saturation: f64,
    width: f64,
}

impl Tone {
    fn of(c: &ChainSettings) -> Self {
        Self {
            eq: BandGains {
                low: c.eq.low,
                mid: c.eq.mid,
                high: c.eq.high,
            },
            compression: c.compressor.ratio,
            saturation: c.saturation,
            width: c.stereo_width,
        }
    }

    /// Kept inside what [`ChainSettings::validate`] accepts.
    fn clamped(self) -> Self {
        let db = |v: f64| v.clamp(-12.0, 12.0);
        Self {
            eq: BandGains {
                low: db(self.eq.low),
                mid: db(self.eq.mid),
                high: db(self.eq.high),
            },
            compression: self.compression.clamp(1.0, 20.0),
            saturation: self.saturation.clamp(0.0, 1.0),
            width: self.width.clamp(0.0, 2.0),
        }
    }
}

/// One section of `master_settings.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionPlan {
    pub section: String,
    pub emotion: String,
    pub start: f64,
    pub end: f64,
    /// 0..1, from the emotion graph or the audio.
    pub intensity: f64,
    /// The section's loudness in the input (integrated over the section).
    #[serde(with = "crate::level")]
    pub input_lufs: f64,
    /// Gain applied to this section relative to the rest of the track.
    pub lufs_offset: f64,
    /// The loudness the plan gives the section at the chain's working level:
    /// its loudness after the chain plus the offset (the master adds one
    /// gain to all sections, so contrasts carry over).
    #[serde(with = "crate::level")]
    pub planned_lufs: f64,
    /// EQ band gains (dB) for this section.
    pub eq: BandGains,
    /// Compression ratio (1 = none).
    pub compression: f64,
    /// Saturation amount 0..1.
    pub saturation: f64,
    /// Stereo width (1 = as mixed).
    pub width: f64,
}

#[cfg(test)]
impl SectionPlan {
    fn tone(&self) -> Tone {
        Tone {
            eq: self.eq,
            compression: self.compression,
            saturation: self.saturation,
            width: self.width,
        }
    }
}

/// How much a mode multiplies the sections' loudness contrast; `dynamics`
/// scales it for the shaping modes (0.5 neutral).
pub fn contrast_factor(mode: Mode, dynamics: f64) -> f64 {
    let base = match mode {
        Mode::Transparent => return 1.0,
        Mode::Cinematic => 1.35,
        Mode::RadioLoud => 0.6,
        Mode::LoFi => 0.85,
    };
    base * (1.25 - 0.5 * dynamics.clamp(0.0, 1.0))
}

/// How a mode moves each dimension per unit of a section's intensity above
/// the track's mean (intensity is 0..1): dB for EQ, a fraction of the ratio
/// for compression, amounts for saturation and width.
fn sensitivity(mode: Mode) -> Tone {
    let t = |low, mid, high, compression, saturation, width| Tone {
        eq: BandGains { low, mid, high },
        compression,
        saturation,
        width,
    };
    match mode {
        Mode::Transparent => t(0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        Mode::Cinematic => t(2.0, 0.0, 1.5, 0.5, 0.15, 0.3),
        Mode::RadioLoud => t(1.0, 0.5, 1.0, 0.4, 0.15, 0.1),
        Mode::LoFi => t(1.0, 0.0, 1.0, 0.3, 0.25, 0.2),
    }
}

/// The global chain a mode plans under the sliders: `dynamics` scales the
/// compression (0.5 as the mode has it), `amount` each dimension.
pub fn global(mode_chain: &ChainSettings, sliders: Sliders) -> ChainSettings {
    let mut c = mode_chain.clone();
    let tone = sliders
        .amount
        .apply(dynamics_tone(Tone::of(&c), sliders))
        .clamped();
    set_tone(&mut c, tone);
    c
}

fn dynamics_tone(mut t: Tone, sliders: Sliders) -> Tone {
    t.compression = 1.0 + (t.compression - 1.0) * (0.5 + sliders.dynamics.clamp(0.0, 1.0));
    t
}

fn set_tone(c: &mut ChainSettings, t: Tone) {
    c.eq.low = t.eq.low;
    c.eq.mid = t.eq.mid;
    c.eq.high = t.eq.high;
    c.compressor.ratio = t.compression;
    c.saturation = t.saturation;
    c.stereo_width = t.width;
}

/// The plan's tone for `sections` with their (intensity, emotion word):
/// around the mode's chain, more of the mode's character where a section is
/// more intense than the track. Loudness fields are left for [`set_loudness`].
pub fn plan(
    sections: &[Section],
    character: &[(f64, String)],
    mode_chain: &ChainSettings,
    mode: Mode,
    sliders: Sliders,
) -> Vec<SectionPlan> {
    let total: f64 = sections.iter().map(|s| s.end - s.start).sum();
    let mean = if total > 0.0 {
        sections
            .iter()
            .zip(character)
            .map(|(s, c)| (s.end - s.start) * c.0)
            .sum::<f64>()
            / total
    } else {
        0.0
    };
    let base = dynamics_tone(Tone::of(mode_chain), sliders);
    let k = sensitivity(mode);
    let r = sliders.reactivity.clamp(0.0, 1.0);
    let shared = shared_intensity(sections, character);
    sections
        .iter()
        .zip(character)
        .zip(shared)
        .map(|((s, (intensity, emotion)), tone_intensity)| {
            let d = r * (tone_intensity - mean);
            let tone = Tone {
                eq: BandGains {
                    low: base.eq.low + k.eq.low * d,
                    mid: base.eq.mid + k.eq.mid * d,
                    high: base.eq.high + k.eq.high * d,
                },
                compression: base.compression * (1.0 + k.compression * d),
                saturation: base.saturation + k.saturation * d,
                width: base.width + k.width * d,
            };
            let tone = sliders.amount.apply(tone.clamped()).clamped();
            SectionPlan {
                section: s.label.clone(),
                emotion: emotion.clone(),
                start: s.start,
                end: s.end,
                intensity: *intensity,
                input_lufs: f64::NAN,
                lufs_offset: 0.0,
                planned_lufs: f64::NAN,
                eq: tone.eq,
                compression: tone.compression,
                saturation: tone.saturation,
                width: tone.width,
            }
        })
        .collect()
}

/// Neighbouring sections whose intensity is within this of their run's
/// mean share one tone: no change of EQ, compression, saturation or width
/// without a musical reason.
pub const SHARED_TONE_INTENSITY: f64 = 0.15;

/// The intensity each section's tone is planned from: runs of neighbours
/// within [`SHARED_TONE_INTENSITY`] of the run's (length-weighted) mean take
/// that mean.
fn shared_intensity(sections: &[Section], character: &[(f64, String)]) -> Vec<f64> {
    let mut out = Vec::with_capacity(sections.len());
    let mut run: Vec<(f64, f64)> = Vec::new();
    let mean = |run: &[(f64, f64)]| {
        let w: f64 = run.iter().map(|r| r.0).sum();
        if w > 0.0 {
            run.iter().map(|r| r.0 * r.1).sum::<f64>() / w
        } else {
            run.iter().map(|r| r.1).sum::<f64>() / run.len().max(1) as f64
        }
    };
    let flush = |run: &mut Vec<(f64, f64)>, out: &mut Vec<f64>| {
        let m = mean(run);
        out.extend(std::iter::repeat_n(m, run.len()));
        run.clear();
    };
    for (s, c) in sections.iter().zip(character) {
        let next = ((s.end - s.start).max(0.0), c.0);
        let mut with = run.clone();
        with.push(next);
        let m = mean(&with);
        if !run.is_empty()
            && with
                .iter()
                .any(|r| (r.1 - m).abs() >= SHARED_TONE_INTENSITY)
        {
            flush(&mut run, &mut out);
        }
        run.push(next);
    }
    flush(&mut run, &mut out);
    out
}

/// How many different tones (EQ, compression, saturation, width) a plan's
/// sections use.
pub fn distinct_tones(plan: &[SectionPlan]) -> usize {
    let mut seen: Vec<[f64; 6]> = Vec::new();
    for p in plan {
        let t = [
            p.eq.low,
            p.eq.mid,
            p.eq.high,
            p.compression,
            p.saturation,
            p.width,
        ];
        if !seen
            .iter()
            .any(|s| s.iter().zip(&t).all(|(a, b)| (a - b).abs() < 1e-9))
        {
            seen.push(t);
        }
    }
    seen.len()
}

/// Plans each section's loudness offset from its loudness after the chain
/// (`processed_lufs`); `input_lufs` is set to the same and may be replaced
/// by the caller with the raw input's. `contrast` multiplies the mode's
/// contrast (a reference track's character; 1 otherwise).
pub fn set_loudness(
    plan: &mut [SectionPlan],
    processed_lufs: &[f64],
    mode: Mode,
    sliders: Sliders,
    contrast: f64,
) {
    // The track's level as the sections' length-weighted mean power.
    let audible: Vec<(f64, f64)> = plan
        .iter()
        .zip(processed_lufs)
        .filter(|(_, l)| l.is_finite())
        .map(|(s, l)| (s.end - s.start, *l))
        .collect();
    let total: f64 = audible.iter().map(|(d, _)| d).sum();
    let reference = if total > 0.0 {
        10.0 * (audible
            .iter()
            .map(|(d, l)| d * 10f64.powf(l / 10.0))
            .sum::<f64>()
            / total)
            .log10()
    } else {
        0.0
    };
    let k = contrast_factor(mode, sliders.dynamics) * contrast - 1.0;
    let r = sliders.reactivity.clamp(0.0, 1.0);
    let most = sliders.max_section_move_db.clamp(0.0, MAX_SECTION_GAIN_DB);
    for (p, &l) in plan.iter_mut().zip(processed_lufs) {
        p.lufs_offset = if l.is_finite() {
            (r * k * (l - reference)).clamp(-most, most)
        } else {
            0.0
        };
        p.input_lufs = l;
        p.planned_lufs = l + p.lufs_offset;
    }
}

/// Checks a plan read from a file: sections in order, values in range; the
/// error names the field (`sections[2].width`).
pub fn validate(plan: &[SectionPlan]) -> Result<(), DspError> {
    let bad = |i: usize, key: &str, reason: &str| {
        Err(DspError::Setting {
            key: format!("sections[{i}].{key}"),
            reason: reason.into(),
        })
    };
    if plan.len() > crate::analysis::sections::MAX_SECTIONS {
        return Err(DspError::Setting {
            key: "sections".into(),
            reason: format!(
                "{} sections; at most {}",
                plan.len(),
                crate::analysis::sections::MAX_SECTIONS
            ),
        });
    }
    let mut prev_end = f64::NEG_INFINITY;
    for (i, p) in plan.iter().enumerate() {
        for (key, v) in [("section", &p.section), ("emotion", &p.emotion)] {
            if let Err(DspError::Document { reason, .. }) =
                crate::analysis::sections::check_label(String::new(), v)
            {
                return bad(i, key, &reason);
            }
        }
        if !(p.start.is_finite() && p.end.is_finite() && p.start >= 0.0 && p.end > p.start) {
            return bad(i, "end", "must be after start, both finite and >= 0");
        }
        if p.start < prev_end - 1e-9 {
            return bad(i, "start", "sections must be in order and not overlap");
        }
        prev_end = p.end;
        if !p.lufs_offset.is_finite() || p.lufs_offset.abs() > MAX_SECTION_GAIN_DB {
            return bad(i, "lufs_offset", "must be within -8..8 dB");
        }
        let ranges = [
            ("eq.low", p.eq.low, -12.0, 12.0),
            ("eq.mid", p.eq.mid, -12.0, 12.0),
            ("eq.high", p.eq.high, -12.0, 12.0),
            ("compression", p.compression, 1.0, 20.0),
            ("saturation", p.saturation, 0.0, 1.0),
            ("width", p.width, 0.0, 2.0),
            ("intensity", p.intensity, 0.0, 1.0),
        ];
        for (key, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return bad(i, key, &format!("{v} is outside {lo}..{hi}"));
            }
        }
    }
    Ok(())
}

/// Linear gain per frame: each section's offset, crossfaded over [`RAMP_S`]
/// around every boundary with a raised cosine (no step, no zipper): what
/// [`GainStage`] applies.
pub fn gain_curve(plan: &[SectionPlan], rate: u32, frames: usize) -> Vec<f32> {
    let mut ones = [vec![1f32; frames]];
    crate::stage::Stage::process(&mut GainStage::new(plan, rate), &mut ones);
    let [g] = ones;
    g
}

/// The plan's loudness offsets as a stage: each frame's gain computed as
/// the blocks pass.
pub struct GainStage {
    curve: crate::automation::Cursor<'static>,
    constant: Option<f32>,
    rate: f64,
    pos: usize,
}

impl GainStage {
    pub fn new(plan: &[SectionPlan], rate: u32) -> Self {
        let a = automation(plan, |p| 10f64.powf(p.lufs_offset / 20.0), 1.0);
        Self {
            constant: a.is_constant().then(|| a.first() as f32),
            curve: a.into_cursor(),
            rate: rate as f64,
            pos: 0,
        }
    }
}

impl crate::stage::Stage for GainStage {
    fn process(&mut self, block: &mut [Vec<f32>]) {
        let frames = crate::stage::frames(block);
        if let Some(g) = self.constant {
            for c in block.iter_mut() {
                c.iter_mut().for_each(|x| *x *= g);
            }
        } else {
            for i in 0..frames {
                let g = self.curve.at((self.pos + i) as f64 / self.rate) as f32;
                for c in block.iter_mut() {
                    c[i] *= g;
                }
            }
        }
        self.pos += frames;
    }
}

/// Each section's integrated loudness (BS.1770 gating over its span) from
/// K-weighted power per frame fed in blocks.
pub struct SectionMeter {
    hop: usize,
    /// Per section: its frames [a, b), the sub-block being summed and its
    /// frame count, and the whole sub-blocks.
    spans: Vec<(usize, usize, f64, usize, Vec<f64>)>,
    pos: usize,
}

impl SectionMeter {
    pub fn new(sections: &[Section], rate: u32) -> Self {
        let fs = rate as f64;
        Self {
            hop: bs1770::hop(rate),
            spans: sections
                .iter()
                .map(|s| {
                    (
                        (s.start * fs) as usize,
                        (s.end * fs) as usize,
                        0.0,
                        0,
                        Vec::new(),
                    )
                })
                .collect(),
            pos: 0,
        }
    }

    pub fn add(&mut self, power: &[f64]) {
        let (from, to) = (self.pos, self.pos + power.len());
        for (a, b, acc, filled, subs) in &mut self.spans {
            let (lo, hi) = ((*a).max(from), (*b).min(to));
            if hi <= lo {
                continue;
            }
            for &p in &power[lo - from..hi - from] {
                *acc += p as f32 as f64;
                *filled += 1;
                if *filled == self.hop {
                    subs.push(std::mem::take(acc));
                    *filled = 0;
                }
            }
        }
        self.pos = to;
    }

    pub fn finish(self) -> Vec<f64> {
        self.spans
            .iter()
            .map(|(_, _, _, _, subs)| bs1770::gated_loudness(subs, self.hop))
            .collect()
    }
}

/// The chain's curves under a section plan: each dimension follows the
/// sections' values (the chain's own when there are none).
pub fn chain_curves(chain: &ChainSettings, plan: &[SectionPlan]) -> ChainCurves {
    ChainCurves {
        eq: [
            automation(plan, |p| p.eq.low, chain.eq.low),
            automation(plan, |p| p.eq.mid, chain.eq.mid),
            automation(plan, |p| p.eq.high, chain.eq.high),
        ],
        ratio: automation(plan, |p| p.compression, chain.compressor.ratio),
        saturation: automation(plan, |p| p.saturation, chain.saturation),
        width: automation(plan, |p| p.width, chain.stereo_width),
    }
}

/// One parameter of the plan as automation; `global` when there are no sections.
pub fn automation(
    plan: &[SectionPlan],
    f: impl Fn(&SectionPlan) -> f64,
    global: f64,
) -> Automation {
    if plan.is_empty() {
        return Automation::constant(global);
    }
    let points: Vec<(f64, f64)> = plan.iter().map(|p| (p.start, f(p))).collect();
    Automation::new(&points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections() -> (Vec<Section>, Vec<(f64, String)>, Vec<f64>) {
        let s = |label: &str, a, b| Section {
            label: label.into(),
            start: a,
            end: b,
        };
        (
            vec![
                s("Intro", 0.0, 10.0),
                s("Chorus", 10.0, 30.0),
                s("Outro", 30.0, 40.0),
            ],
            vec![
                (0.2, "calm".into()),
                (0.9, "powerful".into()),
                (0.2, "calm".into()),
            ],
            vec![-24.0, -14.0, -22.0],
        )
    }

    /// The whole plan: tone, then loudness from `l`.
    fn full(
        s: &[Section],
        c: &[(f64, String)],
        l: &[f64],
        m: Mode,
        sl: Sliders,
    ) -> Vec<SectionPlan> {
        let mut p = plan(s, c, &m.chain(), m, sl);
        set_loudness(&mut p, l, m, sl, 1.0);
        p
    }

    fn contrast(p: &[SectionPlan]) -> f64 {
        let out: Vec<f64> = p.iter().map(|s| s.planned_lufs).collect();
        out.iter().cloned().fold(f64::MIN, f64::max) - out.iter().cloned().fold(f64::MAX, f64::min)
    }

    #[test]
    fn modes_shape_contrast_and_reactivity_zero_is_static() {
        let (s, c, l) = sections();
        let input = 10.0;
        let p = |m, sl| full(&s, &c, &l, m, sl);
        let d = Sliders::default();
        assert!((contrast(&p(Mode::Transparent, d)) - input).abs() < 1e-9);
        assert!(p(Mode::Transparent, d).iter().all(|x| x.lufs_offset == 0.0));
        assert!((contrast(&p(Mode::Cinematic, d)) - input * 1.35).abs() < 1e-9);
        assert!((contrast(&p(Mode::RadioLoud, d)) - input * 0.6).abs() < 1e-9);
        let punchy = Sliders { dynamics: 0.0, ..d };
        assert!(contrast(&p(Mode::Cinematic, punchy)) > contrast(&p(Mode::Cinematic, d)));
        let still = Sliders {
            reactivity: 0.0,
            ..d
        };
        for m in Mode::ALL {
            let offsets: Vec<f64> = p(m, still).iter().map(|x| x.lufs_offset).collect();
            assert!(
                offsets.iter().all(|o| *o == offsets[0]),
                "{m:?}: {offsets:?}"
            );
            // Every setting, not only loudness, is the same in every section,
            // and the same as the global chain's.
            let g = global(&m.chain(), still);
            for x in p(m, still) {
                assert_eq!(x.tone(), p(m, still)[0].tone(), "{m:?}");
                assert_eq!(x.tone(), Tone::of(&g), "{m:?}");
            }
        }
    }

    #[test]
    fn neighbours_of_like_intensity_share_one_tone() {
        let s = |a: f64, b: f64| Section {
            label: "Part".into(),
            start: a,
            end: b,
        };
        let secs = [
            s(0.0, 20.0),
            s(20.0, 40.0),
            s(40.0, 60.0),
            s(60.0, 80.0),
            s(80.0, 100.0),
        ];
        // Two small steps, a big one, then a small one back.
        let c: Vec<(f64, String)> = [0.30, 0.38, 0.33, 0.90, 0.84]
            .iter()
            .map(|&i| (i, "x".to_string()))
            .collect();
        let p = plan(
            &secs,
            &c,
            &Mode::Cinematic.chain(),
            Mode::Cinematic,
            Sliders::default(),
        );
        assert_eq!(p[0].tone(), p[1].tone());
        assert_eq!(p[1].tone(), p[2].tone());
        assert_eq!(p[3].tone(), p[4].tone());
        assert!(
            p[3].width > p[2].width + 0.05,
            "{} vs {}",
            p[3].width,
            p[2].width
        );
        assert_eq!(distinct_tones(&p), 2);
        // Each section keeps its own intensity in the plan.
        assert_eq!(p[1].intensity, 0.38);
        // A slow drift is cut where it has moved too far from its run.
        let drift: Vec<(f64, String)> = [0.1, 0.2, 0.3, 0.4, 0.5]
            .iter()
            .map(|&i| (i, "x".to_string()))
            .collect();
        let p = plan(
            &secs,
            &drift,
            &Mode::Cinematic.chain(),
            Mode::Cinematic,
            Sliders::default(),
        );
        assert!(distinct_tones(&p) >= 2, "{}", distinct_tones(&p));
    }

    #[test]
    fn intense_sections_get_more_of_the_modes_character() {
        let (s, c, l) = sections();
        let d = Sliders::default();
        let cin = full(&s, &c, &l, Mode::Cinematic, d);
        let (intro, chorus) = (&cin[0], &cin[1]);
        assert!(
            chorus.width > intro.width + 0.1,
            "{} vs {}",
            chorus.width,
            intro.width
        );
        assert!(chorus.eq.low > intro.eq.low + 1.0);
        assert!(chorus.compression > intro.compression);
        assert!(chorus.saturation > intro.saturation);
        // Transparent: the tone is the global chain's everywhere.
        for x in full(&s, &c, &l, Mode::Transparent, d) {
            assert_eq!(x.tone(), Tone::of(&Mode::Transparent.chain()));
        }
    }

    #[test]
    fn amounts_scale_each_dimension_towards_neutral() {
        let (s, c, l) = sections();
        let d = Sliders::default();
        let none = Sliders {
            amount: Amounts::parse("eq=0,width=0,saturation=0,compression=0").unwrap(),
            ..d
        };
        for x in full(&s, &c, &l, Mode::Cinematic, none) {
            assert_eq!(x.eq, BandGains::default());
            assert_eq!((x.width, x.saturation, x.compression), (1.0, 0.0, 1.0));
        }
        let g = global(&Mode::Cinematic.chain(), none);
        assert_eq!(
            (g.stereo_width, g.saturation, g.compressor.ratio),
            (1.0, 0.0, 1.0)
        );
        assert_eq!((g.eq.low, g.eq.mid, g.eq.high), (0.0, 0.0, 0.0));
        // Half of the width: half the distance from 1.0, section by section;
        // other dimensions untouched.
        let half = Sliders {
            amount: Amounts::parse("width=0.5").unwrap(),
            ..d
        };
        let (a, b) = (
            full(&s, &c, &l, Mode::Cinematic, d),
            full(&s, &c, &l, Mode::Cinematic, half),
        );
        for (x, y) in a.iter().zip(&b) {
            assert!(((y.width - 1.0) - 0.5 * (x.width - 1.0)).abs() < 1e-12);
            assert_eq!(
                (x.eq, x.saturation, x.compression),
                (y.eq, y.saturation, y.compression)
            );
        }
        let err = |text| Amounts::parse(text).unwrap_err().to_string();
        assert!(err("eq=2").contains("outside 0..1"));
        assert!(err("reverb=0.5").contains("unknown dimension"));
        assert!(err("eq").contains("name=value"));
        assert_eq!(err("eq=loud"), "eq: 'loud' is not a number");
    }

    #[test]
    fn no_section_moves_further_than_the_sliders_allow() {
        let (s, c, l) = sections();
        let d = Sliders::default();
        let widest = |sl| {
            let p = full(&s, &c, &l, Mode::Cinematic, sl);
            p.iter().map(|x| x.lufs_offset.abs()).fold(0.0, f64::max)
        };
        // Cinematic moves these sections by more than 1 dB unbounded.
        assert!(widest(d) > 1.5, "{}", widest(d));
        let one = Sliders {
            max_section_move_db: 1.0,
            ..d
        };
        assert!((widest(one) - 1.0).abs() < 1e-12, "{}", widest(one));
        let none = Sliders {
            max_section_move_db: 0.0,
            ..d
        };
        assert_eq!(widest(none), 0.0);
    }

    #[test]
    fn dynamics_scales_compression() {
        let punchy = Sliders {
            dynamics: 0.0,
            ..Sliders::default()
        };
        let dense = Sliders {
            dynamics: 1.0,
            ..Sliders::default()
        };
        let m = Mode::RadioLoud.chain();
        let r = |sl| global(&m, sl).compressor.ratio;
        assert!(r(punchy) < m.compressor.ratio && m.compressor.ratio < r(dense));
        assert_eq!(r(Sliders::default()), m.compressor.ratio);
    }

    #[test]
    fn validation_names_the_field() {
        let (s, c, l) = sections();
        let mut p = full(&s, &c, &l, Mode::Cinematic, Sliders::default());
        assert!(validate(&p).is_ok());
        p[2].width = 3.0;
        let e = validate(&p).unwrap_err().to_string();
        assert!(
            e.contains("sections[2].width") && e.contains("outside 0..2"),
            "{e}"
        );
        p[2].width = 1.0;
        p[1].start = 5.0;
        let e = validate(&p).unwrap_err().to_string();
        assert!(e.contains("sections[1].start"), "{e}");
    }

    #[test]
    fn automation_is_smooth_through_boundaries() {
        let (s, c, l) = sections();
        let p = full(&s, &c, &l, Mode::Cinematic, Sliders::default());
        let rate = 48_000;
        let g = gain_curve(&p, rate, 40 * rate as usize);
        // Worst step of a raised cosine over RAMP_S between the two levels.
        let lin = |db: f64| 10f64.powf(db / 20.0);
        let span = (lin(p[1].lufs_offset) - lin(p[0].lufs_offset))
            .abs()
            .max((lin(p[2].lufs_offset) - lin(p[1].lufs_offset)).abs());
        let bound = span * std::f64::consts::PI / 2.0 / (RAMP_S * rate as f64) * 1.01;
        let worst = g
            .windows(2)
            .map(|w| (w[1] - w[0]).abs() as f64)
            .fold(0.0, f64::max);
        assert!(worst <= bound, "step {worst} above {bound}");
        // Each section's own level away from its boundaries.
        assert!((g[5 * rate as usize] as f64 - lin(p[0].lufs_offset)).abs() < 1e-6);
        assert!((g[20 * rate as usize] as f64 - lin(p[1].lufs_offset)).abs() < 1e-6);
    }

    #[test]
    fn a_sine_through_a_boundary_does_not_click() {
        let (s, c, l) = sections();
        let p = full(
            &s,
            &c,
            &l,
            Mode::Cinematic,
            Sliders {
                dynamics: 0.0,
                ..Sliders::default()
            },
        );
        let rate = 48_000u32;
        let n = 40 * rate as usize;
        let x: Vec<f32> = (0..n)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / rate as f64).sin()) as f32
            })
            .collect();
        let mut a = crate::Audio::new(rate, vec![x.clone()]).unwrap();
        crate::stage::run_whole(&mut GainStage::new(&p, rate), &mut a);
        // A click is energy far above the tone: the third difference of a
        // 1 kHz sine is small and smooth; a gain step makes it jump.
        let d3 = |v: &[f32], i: usize| (v[i + 3] - 3.0 * v[i + 2] + 3.0 * v[i + 1] - v[i]).abs();
        let gmax = p
            .iter()
            .map(|q| 10f64.powf(q.lufs_offset / 20.0))
            .fold(0.0, f64::max) as f32;
        let steady = (0..4800).map(|i| d3(&x, i)).fold(0.0, f32::max) * gmax;
        let boundary = (10 * rate as usize - rate as usize..10 * rate as usize + rate as usize)
            .map(|i| d3(&a.channels[0], i))
            .fold(0.0, f32::max);
        assert!(
            boundary <= steady * 1.02,
            "boundary {boundary} vs steady {steady}"
        );
        // A hard step there would have been far above it.
        let mut stepped = x.clone();
        stepped[10 * rate as usize..]
            .iter_mut()
            .for_each(|v| *v *= gmax);
        let click = (10 * rate as usize - 8..10 * rate as usize + 8)
            .map(|i| d3(&stepped, i))
            .fold(0.0, f32::max);
        assert!(
            click > steady * 1.1,
            "the detector cannot see a step: {click} vs {steady}"
        );
    }
}
