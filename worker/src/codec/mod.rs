//! Lossy codecs as the platforms run them: a master is encoded in-process
//! with each reference encoder, decoded to float without clamping, and
//! measured ([`check`]).
//!
//! Encoders (all built from bundled sources, no system libraries):
//! libopus 1.5 (`opus-codec`, Ogg-muxed with the `ogg` crate), LAME
//! (`mp3lame-encoder`), Fraunhofer FDK AAC (`fdk-aac`, in MP4 by `mp4`,
//! tagged by `mp4ameta`), libvorbis
//! (`vorbis_rs`, aoTuV). Decoding is to f32 with nothing clamped: symphonia
//! (AAC), minimp3 (MP3), libvorbisfile (Vorbis), libopus (Opus); symphonia's
//! MP3 and Vorbis decoders clamp at full scale, hiding the overs counted here.

mod aac;
pub mod check;
pub mod flac;
mod mp3;
mod opus;
pub mod regions;
pub mod tags;
mod vorbis;

use crate::decode::DecodeLimits;
use loopmind_dsp::targets::{Codec, Format, Lossy};
use std::path::Path;

/// Why an encode, or the decode of one, failed; and whether to try again.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The codec library refused or failed: parameters it will not take, a
    /// stream it cannot read. The same master meets it again.
    #[error("{codec}: {reason}")]
    Library { codec: &'static str, reason: String },
    /// A stream asks for more than the decoder's limits (or the encoder's).
    #[error("{codec}: {what}")]
    Limit { codec: &'static str, what: String },
    /// Opening, reading or writing a file (a full disk, say).
    #[error("{}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Writing through an encoder's output stream (the caller names the file).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl CodecError {
    pub(crate) fn lib(codec: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Library {
            codec,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn limit(codec: &'static str, what: impl Into<String>) -> Self {
        Self::Limit {
            codec,
            what: what.into(),
        }
    }

    pub(crate) fn file(path: &Path, source: std::io::Error) -> Self {
        Self::File {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A file that could not be read or written may be there later; a codec
    /// that refuses our master will refuse it again.
    pub fn action(&self) -> crate::error::Action {
        match self {
            Self::File { .. } | Self::Io(_) => crate::error::Action::Retry,
            Self::Library { .. } | Self::Limit { .. } => crate::error::Action::Abort,
        }
    }
}

/// Frames handed to an encoder at a time.
pub const BLOCK: usize = 4096;

/// A streaming encoder writing one file.
pub trait Encode {
    /// Encodes planar samples (every channel the same length).
    fn write(&mut self, planar: &[&[f32]]) -> Result<(), CodecError>;
    /// Encodes what is buffered and closes the file.
    fn finish(self: Box<Self>) -> Result<(), CodecError>;
}

/// The file name extension of an encoded file.
pub fn extension(format: Format) -> &'static str {
    match format {
        Format::Flac => "flac",
        Format::Aac => "m4a",
        Format::Opus => "opus",
        Format::Mp3 => "mp3",
        Format::Vorbis => "ogg",
    }
}

/// The rate `format` encodes a `rate` master at, as platforms transcode:
/// Opus runs at 48 kHz only; hi-res masters go to 48 kHz (MP3 stops
/// there) and low-rate ones to 44.1 kHz (the codecs' bitrates assume it).
pub fn encode_rate(format: Lossy, rate: u32) -> u32 {
    match rate {
        _ if format == Lossy::Opus => 48_000,
        r if r > 48_000 => 48_000,
        r if r < 44_100 => 44_100,
        r => r,
    }
}

/// Channels a lossy encode carries: stereo always (a mono master as two
/// equal channels), as platforms stream it; the bitrates assume stereo.
pub const ENCODE_CHANNELS: usize = 2;

/// Feeds a mono master to a stereo encoder.
struct Doubled(Box<dyn Encode>);

impl Encode for Doubled {
    fn write(&mut self, planar: &[&[f32]]) -> Result<(), CodecError> {
        self.0.write(&[planar[0], planar[0]])
    }
    fn finish(self: Box<Self>) -> Result<(), CodecError> {
        self.0.finish()
    }
}

/// Resamples on the way into another encoder.
struct Resampling {
    stage: loopmind_dsp::process::resample::ResampleStage,
    out: Vec<Vec<f32>>,
    inner: Box<dyn Encode>,
}

impl Resampling {
    fn pass(&mut self) -> Result<(), CodecError> {
        let slices: Vec<&[f32]> = self.out.iter().map(Vec::as_slice).collect();
        if !slices.first().is_some_and(|c| c.is_empty()) {
            self.inner.write(&slices)?;
        }
        self.out.iter_mut().for_each(Vec::clear);
        Ok(())
    }
}

impl Encode for Resampling {
    fn write(&mut self, planar: &[&[f32]]) -> Result<(), CodecError> {
        let block: Vec<Vec<f32>> = planar.iter().map(|c| c.to_vec()).collect();
        let resampled = self.stage.push(&block, &mut self.out);
        resampled.map_err(|e| CodecError::lib("resampler", e))?;
        self.pass()
    }

    fn finish(mut self: Box<Self>) -> Result<(), CodecError> {
        let resampled = self.stage.finish(&mut self.out);
        resampled.map_err(|e| CodecError::lib("resampler", e))?;
        self.pass()?;
        self.inner.finish()
    }
}

/// An encoder for `codec` writing to `path`, taking `channels` at `rate`
/// (resampled on the way in where [`encode_rate`] says, as the platforms do).
pub fn encoder(
    codec: Codec,
    rate: u32,
    channels: usize,
    path: &Path,
    tags: &tags::FileTags,
) -> Result<Box<dyn Encode>, CodecError> {
    if !(1..=2).contains(&channels) {
        let what = format!("{codec}: {channels} channels (mono or stereo only)");
        return Err(CodecError::limit("encoder", what));
    }
    let file = std::fs::File::create(path).map_err(|e| CodecError::file(path, e))?;
    let buffered = |file| std::io::BufWriter::with_capacity(1 << 16, file);
    let (source_rate, source_channels) = (rate, channels);
    let rate = encode_rate(codec.format, rate);
    let channels = ENCODE_CHANNELS;
    // Every encode carries the track's tags and its loudness.
    let inner: Box<dyn Encode> = match codec.format {
        Lossy::Aac => Box::new(aac::Encoder::new(
            codec.kbps, rate, channels, file, path, tags,
        )?),
        Lossy::Mp3 => {
            use std::io::Write;
            let mut out = buffered(file);
            out.write_all(&tags.id3v2())
                .map_err(|e| CodecError::file(path, e))?;
            Box::new(mp3::Encoder::new(codec.kbps, rate, channels, out)?)
        }
        Lossy::Vorbis => Box::new(vorbis::Encoder::new(
            codec.kbps,
            rate,
            channels,
            buffered(file),
            tags,
        )?),
        Lossy::Opus => Box::new(opus::Encoder::new(
            codec.kbps,
            source_rate,
            channels,
            buffered(file),
            tags,
        )?),
    };
    let resampled: Box<dyn Encode> = if rate == source_rate {
        inner
    } else {
        Box::new(Resampling {
            stage: loopmind_dsp::process::resample::ResampleStage::new(source_rate, rate, channels)
                .map_err(|e| CodecError::lib("resampler", format!("{codec}: {e}")))?,
            out: vec![Vec::new(); channels],
            inner,
        })
    };
    Ok(if source_channels == 1 {
        Box::new(Doubled(resampled))
    } else {
        resampled
    })
}

/// Decodes an encoded file, handing its rate and planar f32 blocks to `f`.
pub fn decode(
    format: Lossy,
    path: &Path,
    limits: &DecodeLimits,
    mut f: impl FnMut(u32, &[&[f32]]),
) -> Result<(), CodecError> {
    // symphonia's MP3 and Vorbis decoders clamp to full scale.
    match format {
        Lossy::Opus => return opus::decode(path, limits, f),
        Lossy::Mp3 => return mp3::decode(path, limits, f),
        Lossy::Vorbis => return vorbis::decode(path, limits, f),
        Lossy::Aac => {}
    }
    use loopmind_dsp::pipeline::{self, Source};
    let mut src = crate::decode::DecodeSource::open(path, limits)
        .map_err(|e| CodecError::lib("aac", e))?
        .ignoring_stated_length();
    let rate = src.rate();
    pipeline::for_each_block(&mut src, BLOCK, |b| {
        f(rate, &b.iter().map(Vec::as_slice).collect::<Vec<_>>());
        Ok(())
    })
    .map_err(|e| CodecError::lib("aac", src.error(e)))?;
    Ok(())
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

/// A codec check named none of off, report, enforce.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("'{0}' is not off, report or enforce")]
pub struct UnknownCodecCheck(String);

impl std::str::FromStr for CodecCheck {
    type Err = UnknownCodecCheck;
    fn from_str(s: &str) -> Result<Self, UnknownCodecCheck> {
        match s {
            "off" => Ok(Self::Off),
            "report" => Ok(Self::Report),
            "enforce" => Ok(Self::Enforce),
            other => Err(UnknownCodecCheck(other.to_string())),
        }
    }
}
