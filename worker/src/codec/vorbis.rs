//! Ogg Vorbis by libvorbis (aoTuV), VBR around the bitrate as Spotify's
//! qualities are named.

use super::CodecError;
use std::io::Write;
use std::num::{NonZeroU32, NonZeroU8};
use vorbis_rs::{VorbisBitrateManagementStrategy, VorbisEncoder, VorbisEncoderBuilder};

pub(super) struct Encoder<W: Write> {
    enc: VorbisEncoder<W>,
}

impl<W: Write> Encoder<W> {
    pub(super) fn new(
        kbps: u32,
        rate: u32,
        channels: usize,
        out: W,
        tags: &super::tags::FileTags,
    ) -> Result<Self, CodecError> {
        let err = |e: vorbis_rs::VorbisError| {
            CodecError::lib("vorbis", format!("{kbps}k at {rate} Hz: {e}"))
        };
        let nz = |v: u32| NonZeroU32::new(v).ok_or_else(|| CodecError::lib("vorbis", "zero rate"));
        // A fixed stream serial: the same master encodes to the same bytes.
        let mut b = VorbisEncoderBuilder::new_with_serial(
            nz(rate)?,
            NonZeroU8::new(channels as u8)
                .ok_or_else(|| CodecError::lib("vorbis", "no channels"))?,
            out,
            0x4c4d_0001,
        );
        b.comment_tags(tags.comments()).map_err(err)?;
        b.bitrate_management_strategy(VorbisBitrateManagementStrategy::Vbr {
            target_bitrate: nz(kbps * 1000)?,
        });
        Ok(Self {
            enc: b.build().map_err(err)?,
        })
    }
}

impl<W: Write> super::Encode for Encoder<W> {
    fn write(&mut self, planar: &[&[f32]]) -> Result<(), CodecError> {
        self.enc
            .encode_audio_block(planar)
            .map_err(|e| CodecError::lib("vorbis", e))
    }

    fn finish(self: Box<Self>) -> Result<(), CodecError> {
        let mut out = self
            .enc
            .finish()
            .map_err(|e| CodecError::lib("vorbis", e))?;
        Ok(out.flush()?)
    }
}

/// Decodes an Ogg Vorbis file to f32 by libvorbisfile (nothing clamped).
pub(super) fn decode(
    path: &std::path::Path,
    limits: &crate::decode::DecodeLimits,
    mut f: impl FnMut(u32, &[&[f32]]),
) -> Result<(), CodecError> {
    let file = std::fs::File::open(path).map_err(|e| CodecError::file(path, e))?;
    let mut dec = vorbis_rs::VorbisDecoder::new(std::io::BufReader::new(file))
        .map_err(|e| CodecError::lib("vorbis", e))?;
    let (nch, rate) = (
        dec.channels().get() as usize,
        dec.sampling_frequency().get(),
    );
    if nch > limits.max_channels {
        return Err(CodecError::limit("vorbis", format!("{nch} channels")));
    }
    let mut done = 0f64;
    while let Some(block) = dec
        .decode_audio_block()
        .map_err(|e| CodecError::lib("vorbis", e))?
    {
        let s = block.samples();
        done += s.first().map_or(0, |c| c.len()) as f64 / rate as f64;
        if done > limits.max_seconds {
            return Err(CodecError::limit(
                "vorbis",
                format!("longer than {} s", limits.max_seconds),
            ));
        }
        f(rate, s);
    }
    Ok(())
}
