//! Mastering modes: each sets the chain's character.

use crate::process::chain::ChainSettings;
use crate::process::compressor::CompressorSettings;
use crate::process::eq::EqSettings;
use crate::process::limiter::LimiterSettings;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Gain and true-peak limiting only (plus a DC-blocking high-pass).
    #[default]
    Transparent,
    /// Warm, wide, gently compressed; keeps dynamics.
    Cinematic,
    /// Dense and bright: more compression, saturation and limiting.
    RadioLoud,
    /// Band-limited, saturated, narrower.
    LoFi,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::Transparent,
        Mode::Cinematic,
        Mode::RadioLoud,
        Mode::LoFi,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Transparent => "transparent",
            Mode::Cinematic => "cinematic",
            Mode::RadioLoud => "radio-loud",
            Mode::LoFi => "lo-fi",
        }
    }

    /// The global chain this mode plans. The chain runs at a working level of
    /// -18 LUFS, so thresholds and drive mean the same for quiet and loud mixes.
    pub fn chain(self) -> ChainSettings {
        let base = ChainSettings::default();
        match self {
            Mode::Transparent => base,
            Mode::Cinematic => ChainSettings {
                eq_curve: "warm_cinematic".into(),
                eq: EqSettings {
                    low: 1.5,
                    mid: -0.5,
                    high: 1.0,
                    mid_freq_hz: 400.0,
                    ..EqSettings::default()
                },
                compressor: CompressorSettings {
                    threshold_db: -22.0,
                    ratio: 1.8,
                    knee_db: 8.0,
                    attack_ms: 30.0,
                    release_ms: 300.0,
                    makeup_db: 0.0,
                },
                saturation: 0.25,
                stereo_width: 1.15,
                ..base
            },
            Mode::RadioLoud => ChainSettings {
                eq_curve: "bright_dense".into(),
                eq: EqSettings {
                    low: 1.0,
                    mid: 0.5,
                    high: 2.0,
                    mid_freq_hz: 2500.0,
                    highpass_hz: 25.0,
                    ..EqSettings::default()
                },
                compressor: CompressorSettings {
                    threshold_db: -24.0,
                    ratio: 3.0,
                    knee_db: 6.0,
                    attack_ms: 8.0,
                    release_ms: 120.0,
                    makeup_db: 0.0,
                },
                saturation: 0.35,
                stereo_width: 1.05,
                limiter: LimiterSettings {
                    lookahead_ms: 3.0,
                    release_ms: 60.0,
                },
                ..base
            },
            Mode::LoFi => ChainSettings {
                eq_curve: "lofi_bandlimited".into(),
                eq: EqSettings {
                    low: -1.0,
                    mid: 1.5,
                    high: -3.0,
                    mid_freq_hz: 1200.0,
                    high_freq_hz: 5000.0,
                    highpass_hz: 90.0,
                    lowpass_hz: Some(7500.0),
                    ..EqSettings::default()
                },
                compressor: CompressorSettings {
                    threshold_db: -22.0,
                    ratio: 2.5,
                    knee_db: 6.0,
                    attack_ms: 15.0,
                    release_ms: 200.0,
                    makeup_db: 0.0,
                },
                saturation: 0.5,
                stereo_width: 0.6,
                ..base
            },
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mode's name that is none of them.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("unknown mode '{0}' (transparent, cinematic, radio-loud, lo-fi)")]
pub struct UnknownMode(String);

impl FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, UnknownMode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}
