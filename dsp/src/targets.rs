//! Platform targets: the loudness and true-peak ceiling a master is made for,
//! and the format it is delivered in. Sources are listed in docs/targets.md.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub lufs: f64,
    pub ceiling_dbtp: f64,
    /// None keeps the source's rate.
    pub rate: Option<u32>,
    pub bits: u16,
    /// The lossy codecs the platform streams the master in: the master is
    /// checked (and, enforced, kept) under its ceiling after each.
    #[serde(default)]
    pub codecs: Vec<Codec>,
}

/// A lossy codec at a bitrate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Codec {
    pub format: Lossy,
    pub kbps: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lossy {
    /// AAC-LC (what Apple Music, YouTube's AAC streams and web players play).
    Aac,
    Opus,
    Mp3,
    /// Ogg Vorbis (Spotify's apps).
    Vorbis,
}

impl Lossy {
    pub fn name(self) -> &'static str {
        match self {
            Lossy::Aac => "aac",
            Lossy::Opus => "opus",
            Lossy::Mp3 => "mp3",
            Lossy::Vorbis => "vorbis",
        }
    }
}

/// A deliverable's file format beside the WAV: FLAC (lossless, the
/// master's own samples) or one of the lossy codecs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Flac,
    Aac,
    Opus,
    Mp3,
    Vorbis,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self.lossy() {
            Some(l) => l.name(),
            None => "flac",
        }
    }

    /// The lossy codec, for all but FLAC.
    pub fn lossy(self) -> Option<Lossy> {
        match self {
            Format::Flac => None,
            Format::Aac => Some(Lossy::Aac),
            Format::Opus => Some(Lossy::Opus),
            Format::Mp3 => Some(Lossy::Mp3),
            Format::Vorbis => Some(Lossy::Vorbis),
        }
    }
}

impl From<Lossy> for Format {
    fn from(l: Lossy) -> Format {
        match l {
            Lossy::Aac => Format::Aac,
            Lossy::Opus => Format::Opus,
            Lossy::Mp3 => Format::Mp3,
            Lossy::Vorbis => Format::Vorbis,
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}k", self.format.name(), self.kbps)
    }
}

const fn c(format: Lossy, kbps: u32) -> Codec {
    Codec { format, kbps }
}
use Lossy::{Aac, Mp3, Opus, Vorbis};

/// (name, LUFS, ceiling dBTP, rate, bits, codecs). Where a platform names
/// several qualities the lowest its paying listeners get by default is
/// taken (more overshoot); sources in docs/targets.md.
#[allow(clippy::type_complexity)]
const PRESETS: &[(&str, f64, f64, Option<u32>, u16, &[Codec])] = &[
    (
        "spotify",
        -14.0,
        -1.0,
        None,
        24,
        &[c(Vorbis, 160), c(Aac, 128)],
    ),
    ("apple-music", -16.0, -1.0, None, 24, &[c(Aac, 256)]),
    (
        "youtube",
        -14.0,
        -1.0,
        None,
        24,
        &[c(Opus, 128), c(Aac, 128)],
    ),
    ("amazon-music", -14.0, -2.0, None, 24, &[c(Mp3, 320)]),
    ("tidal", -14.0, -1.0, None, 24, &[c(Aac, 320)]),
    ("deezer", -15.0, -1.0, None, 24, &[c(Mp3, 320)]),
    (
        "soundcloud",
        -14.0,
        -1.0,
        None,
        24,
        &[c(Opus, 64), c(Mp3, 128)],
    ),
    ("ebu-r128", -23.0, -1.0, None, 24, &[]),
    ("atsc-a85", -24.0, -2.0, None, 24, &[]),
    ("film", -20.0, -1.0, None, 24, &[]),
    ("club", -9.0, -0.3, None, 24, &[c(Mp3, 320)]),
    ("cd", -9.0, -0.3, Some(44_100), 16, &[]),
];

pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.0).collect()
}

pub fn preset(name: &str) -> Option<Target> {
    PRESETS
        .iter()
        .find(|p| p.0 == name)
        .map(|&(name, lufs, ceiling_dbtp, rate, bits, codecs)| Target {
            name: name.to_string(),
            lufs,
            ceiling_dbtp,
            rate,
            bits,
            codecs: codecs.to_vec(),
        })
}

impl Target {
    /// A custom target from `--lufs/--ceiling`.
    pub fn custom(lufs: f64, ceiling_dbtp: f64) -> Target {
        Target {
            name: format!("custom{}", fmt_num(lufs)),
            lufs,
            ceiling_dbtp,
            rate: None,
            bits: 24,
            codecs: Vec::new(),
        }
    }

    pub fn validate(&self) -> Result<(), crate::DspError> {
        let bad = |key: &str, reason: String| {
            Err(crate::DspError::Setting {
                key: format!("{}.{key}", self.name),
                reason,
            })
        };
        // The name becomes a file name (`<name>.wav`): a preset's, or a
        // custom one made of safe characters.
        let safe = !self.name.is_empty()
            && self.name.len() <= 64
            && !self.name.starts_with('.')
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !safe {
            return Err(crate::DspError::Setting {
                key: "target name".into(),
                reason: format!(
                    "{:?} is not a safe name (letters, digits, - _ . up to 64 bytes, not starting with a dot)",
                    self.name.chars().take(80).collect::<String>()
                ),
            });
        }
        if !(-40.0..=-5.0).contains(&self.lufs) {
            return bad("lufs", format!("{} is outside -40..-5 LUFS", self.lufs));
        }
        if !(-12.0..=0.0).contains(&self.ceiling_dbtp) {
            return bad(
                "ceiling",
                format!("{} is outside -12..0 dBTP", self.ceiling_dbtp),
            );
        }
        if let Some(r) = self.rate {
            if !(8000..=192_000).contains(&r) {
                return bad("rate", format!("{r} Hz is outside 8000..192000"));
            }
        }
        if self.bits != 16 && self.bits != 24 {
            return bad("bits", format!("{} is not 16 or 24", self.bits));
        }
        for c in &self.codecs {
            if !(32..=320).contains(&c.kbps) {
                return bad("codecs", format!("{c}: {} kb/s is outside 32..320", c.kbps));
            }
        }
        Ok(())
    }
}

fn fmt_num(v: f64) -> String {
    let s = format!("{v}");
    s.replace('.', "_")
}
