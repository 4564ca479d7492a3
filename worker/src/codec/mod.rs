//! Lossy codecs as the platforms run them: a master is encoded in-process
//! with each reference encoder, decoded to float without clamping, and
//! measured ([`check`]).
//!
//! Encoders (all built from bundled sources, no system libraries):
//! libopus 1.5 (`opus-codec`, Ogg-muxed with the `ogg` crate), LAME
//! (`mp3lame-encoder`), Fraunhofer FDK AAC (`fdk-aac`, ADTS), libvorbis
//! (`vorbis_rs`, aoTuV). Decoding is to f32 with nothing clamped: symphonia
//! (AAC), minimp3 (MP3), libvorbisfile (Vorbis), libopus (Opus); symphonia's
//! MP3 and Vorbis decoders clamp at full scale, hiding the overs counted here.

mod aac;
pub mod check;
mod mp3;
mod opus;
mod vorbis;

use crate::decode::DecodeLimits;
use loopmind_dsp::targets::{Codec, Lossy};
use std::path::Path;

/// Frames handed to an encoder at a time.
pub const BLOCK: usize = 4096;

/// A streaming encoder writing one file.
pub trait Encode {
    /// Encodes planar samples (every channel the same length).
    fn write(&mut self, planar: &[&[f32]]) -> Result<(), String>;
    /// Encodes what is buffered and closes the file.
    fn finish(self: Box<Self>) -> Result<(), String>;
}

/// The file name extension of an encoded file.
pub fn extension(format: Lossy) -> &'static str {
    match format {
        Lossy::Aac => "aac",
        Lossy::Opus => "opus",
        Lossy::Mp3 => "mp3",
        Lossy::Vorbis => "ogg",
    }
}

/// An encoder for `codec` writing to `path`, taking `channels` at `rate`
/// (Opus runs at 48 kHz: other rates are resampled on the way in, as the
/// platforms do).
pub fn encoder(
    codec: Codec,
    rate: u32,
    channels: usize,
    path: &Path,
) -> Result<Box<dyn Encode>, String> {
    if !(1..=2).contains(&channels) {
        return Err(format!(
            "{codec}: {channels} channels (mono or stereo only)"
        ));
    }
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = std::io::BufWriter::with_capacity(1 << 16, file);
    Ok(match codec.format {
        Lossy::Aac => Box::new(aac::Encoder::new(codec.kbps, rate, channels, out)?),
        Lossy::Mp3 => Box::new(mp3::Encoder::new(codec.kbps, rate, channels, out)?),
        Lossy::Vorbis => Box::new(vorbis::Encoder::new(codec.kbps, rate, channels, out)?),
        Lossy::Opus => Box::new(opus::Encoder::new(codec.kbps, rate, channels, out)?),
    })
}

/// Decodes an encoded file, handing its rate and planar f32 blocks to `f`.
pub fn decode(
    format: Lossy,
    path: &Path,
    limits: &DecodeLimits,
    mut f: impl FnMut(u32, &[&[f32]]),
) -> Result<(), String> {
    // symphonia's MP3 and Vorbis decoders clamp to full scale.
    match format {
        Lossy::Opus => return opus::decode(path, limits, f),
        Lossy::Mp3 => return mp3::decode(path, limits, f),
        Lossy::Vorbis => return vorbis::decode(path, limits, f),
        Lossy::Aac => {}
    }
    use loopmind_dsp::pipeline::Source;
    let mut src = crate::decode::DecodeSource::open(path, limits).map_err(|e| e.to_string())?;
    let rate = src.rate();
    let mut buf: Vec<Vec<f32>> = vec![Vec::new(); src.channels()];
    loop {
        buf.iter_mut().for_each(Vec::clear);
        let more = src.read(&mut buf).map_err(|e| src.error(e).to_string())?;
        if !buf[0].is_empty() {
            let planar: Vec<&[f32]> = buf.iter().map(Vec::as_slice).collect();
            f(rate, &planar);
        }
        if !more {
            return Ok(());
        }
    }
}

/// What the codec check does with a master that goes over its ceiling once
/// encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecCheck {
    /// No check.
    Off,
    /// Checked and reported; the master is left as it is.
    Report,
    /// Rendered again under a lower limiter ceiling until every codec's
    /// decode is under the target's ceiling (or the target fails, saying so).
    #[default]
    Enforce,
}

impl std::str::FromStr for CodecCheck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "report" => Ok(Self::Report),
            "enforce" => Ok(Self::Enforce),
            other => Err(format!("'{other}' is not off, report or enforce")),
        }
    }
}
