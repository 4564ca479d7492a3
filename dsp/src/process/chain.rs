//! The processing chain before the limiter, run in place:
//! working-level gain -> high-pass + EQ -> compressor -> saturation -> width.
//! The EQ bands, ratio, saturation and width follow curves ([`ChainCurves`]):
//! constant, or each section's values crossfaded at the boundaries (the
//! planner's `plan::chain_curves`).

use crate::analysis::reference::{match_cascade, BandGain};
use crate::automation::Automation;
use crate::biquad::CascadeStage;
use crate::process::compressor::{CompressorSettings, CompressorStage};
use crate::process::eq::{EqSettings, EqStage};
use crate::process::limiter::LimiterSettings;
use crate::process::saturation::SaturationStage;
use crate::process::width::WidthStage;
use crate::stage::Stage;
use crate::{Audio, DspError};
use serde::{Deserialize, Serialize};

/// Level the chain works at, so a mode sounds the same on quiet and hot mixes.
pub const WORKING_LUFS: f64 = -18.0;

/// The global settings: `master_settings.json`'s "global" block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSettings {
    pub eq_curve: String,
    pub eq: EqSettings,
    pub compressor: CompressorSettings,
    /// 0..1 (see [`saturation::MAX_DRIVE`]).
    pub saturation: f64,
    pub stereo_width: f64,
    pub limiter: LimiterSettings,
    /// Octave-band corrections towards a reference track's tonal balance,
    /// after the EQ (empty without a reference).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_eq: Vec<BandGain>,
}

impl Default for ChainSettings {
    fn default() -> Self {
        Self {
            eq_curve: "flat".into(),
            eq: EqSettings::default(),
            compressor: CompressorSettings::default(),
            saturation: 0.0,
            stereo_width: 1.0,
            limiter: LimiterSettings::default(),
            match_eq: Vec::new(),
        }
    }
}

impl ChainSettings {
    pub fn validate(&self) -> Result<(), DspError> {
        let bad = |key: &str, reason: &str| {
            Err(DspError::Setting {
                key: key.into(),
                reason: reason.into(),
            })
        };
        let eq = &self.eq;
        for (k, v) in [("eq.low", eq.low), ("eq.mid", eq.mid), ("eq.high", eq.high)] {
            if !(-12.0..=12.0).contains(&v) {
                return bad(k, "must be within -12..12 dB");
            }
        }
        if !(5.0..=300.0).contains(&eq.highpass_hz) {
            return bad("eq.highpass_hz", "must be within 5..300 Hz");
        }
        if !(0.1..=10.0).contains(&eq.mid_q) {
            return bad("eq.mid_q", "must be within 0.1..10");
        }
        let c = &self.compressor;
        if !(1.0..=20.0).contains(&c.ratio) {
            return bad("compressor.ratio", "must be within 1..20");
        }
        if !(0.1..=500.0).contains(&c.attack_ms) || !(1.0..=5000.0).contains(&c.release_ms) {
            return bad(
                "compressor.attack_ms",
                "attack 0.1..500 ms, release 1..5000 ms",
            );
        }
        if !(0.0..=1.0).contains(&self.saturation) {
            return bad("saturation", "must be within 0..1");
        }
        if !(0.0..=2.0).contains(&self.stereo_width) {
            return bad("stereo_width", "must be within 0..2");
        }
        for (i, b) in self.match_eq.iter().enumerate() {
            if !(20.0..=20_000.0).contains(&b.freq_hz) || !(-12.0..=12.0).contains(&b.gain_db) {
                return bad(
                    &format!("match_eq[{i}]"),
                    "freq_hz within 20..20000, gain_db within -12..12",
                );
            }
        }
        if !(0.5..=20.0).contains(&self.limiter.lookahead_ms) {
            return bad("limiter.lookahead_ms", "must be within 0.5..20 ms");
        }
        if !(1.0..=2000.0).contains(&self.limiter.release_ms) {
            return bad("limiter.release_ms", "must be within 1..2000 ms");
        }
        Ok(())
    }

    /// Runs the chain in place, static. `input_lufs` is the input's
    /// integrated loudness.
    pub fn run(&self, audio: &mut Audio, input_lufs: f64) {
        self.run_with(audio, input_lufs, self.constant_curves());
    }

    /// Runs the chain in place with its parameters following `curves`.
    pub fn run_with(&self, audio: &mut Audio, input_lufs: f64, curves: ChainCurves) {
        let mut stage = self.stage(input_lufs, curves, audio.rate, audio.num_channels());
        crate::stage::run_whole(&mut stage, audio);
    }

    /// Every automated parameter held at this chain's own value.
    pub fn constant_curves(&self) -> ChainCurves {
        ChainCurves {
            eq: [self.eq.low, self.eq.mid, self.eq.high].map(Automation::constant),
            ratio: Automation::constant(self.compressor.ratio),
            saturation: Automation::constant(self.saturation),
            width: Automation::constant(self.stereo_width),
        }
    }

    /// The chain as a stage (see [`ChainStage`]).
    pub fn stage(
        &self,
        input_lufs: f64,
        curves: ChainCurves,
        rate: u32,
        channels: usize,
    ) -> ChainStage {
        let matcher = (!self.match_eq.is_empty())
            .then(|| CascadeStage::new(match_cascade(&self.match_eq, rate), channels));
        ChainStage {
            level: crate::db_to_lin(WORKING_LUFS - input_lufs) as f32,
            eq: EqStage::new(&self.eq, curves.eq, rate, channels),
            matcher,
            compressor: CompressorStage::new(&self.compressor, curves.ratio, rate),
            saturation: SaturationStage::new(curves.saturation, channels, rate),
            width: WidthStage::new(curves.width, channels, rate),
        }
    }
}

/// The chain's parameters over the track: the EQ's low, mid and high gains
/// (dB), the compressor's ratio, saturation and width.
pub struct ChainCurves {
    pub eq: [Automation; 3],
    pub ratio: Automation,
    pub saturation: Automation,
    pub width: Automation,
}

/// The chain before the limiter as one stage: working-level gain -> EQ ->
/// reference match EQ -> compressor -> saturation -> width.
pub struct ChainStage {
    level: f32,
    eq: EqStage,
    matcher: Option<CascadeStage>,
    compressor: CompressorStage,
    saturation: SaturationStage,
    width: WidthStage,
}

impl Stage for ChainStage {
    fn process(&mut self, block: &mut [Vec<f32>]) {
        for c in block.iter_mut() {
            c.iter_mut().for_each(|s| *s *= self.level);
        }
        self.eq.process(block);
        if let Some(m) = &mut self.matcher {
            m.process(block);
        }
        self.compressor.process(block);
        self.saturation.process(block);
        self.width.process(block);
    }
}
