//! AAC-LC by the Fraunhofer FDK encoder, in ADTS frames.

use super::CodecError;
use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, EncoderParams, Transport};
use std::io::Write;

pub(super) struct Encoder<W: Write> {
    enc: fdk_aac::enc::Encoder,
    channels: usize,
    /// Interleaved 16-bit input not yet taken by the encoder (the FDK
    /// encoder takes integer PCM only).
    pcm: Vec<i16>,
    buf: Vec<u8>,
    out: W,
}

impl<W: Write> Encoder<W> {
    pub(super) fn new(kbps: u32, rate: u32, channels: usize, out: W) -> Result<Self, CodecError> {
        let enc = fdk_aac::enc::Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(kbps * 1000),
            sample_rate: rate,
            transport: Transport::Adts,
            channels: if channels == 1 {
                ChannelMode::Mono
            } else {
                ChannelMode::Stereo
            },
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|e| CodecError::lib("aac", format!("{kbps}k at {rate} Hz: {e}")))?;
        Ok(Self {
            enc,
            channels,
            pcm: Vec::new(),
            buf: vec![0; 8192],
            out,
        })
    }

    fn drain(&mut self, all: bool) -> Result<(), CodecError> {
        // One frame (1024 per channel) at a time.
        let frame = 1024 * self.channels;
        let mut used = 0;
        while self.pcm.len() - used >= frame || (all && used < self.pcm.len()) {
            let end = (used + frame).min(self.pcm.len());
            let info = self
                .enc
                .encode(&self.pcm[used..end], &mut self.buf)
                .map_err(|e| CodecError::lib("aac", e))?;
            self.out.write_all(&self.buf[..info.output_size])?;
            if info.input_consumed == 0 && info.output_size == 0 {
                break;
            }
            used += info.input_consumed;
        }
        self.pcm.drain(..used);
        Ok(())
    }
}

impl<W: Write> super::Encode for Encoder<W> {
    fn write(&mut self, planar: &[&[f32]]) -> Result<(), CodecError> {
        let n = planar[0].len();
        for i in 0..n {
            for c in planar {
                self.pcm
                    .push((c[i] * 32768.0).round().clamp(-32768.0, 32767.0) as i16);
            }
        }
        self.drain(false)
    }

    fn finish(mut self: Box<Self>) -> Result<(), CodecError> {
        // The FDK wrapper cannot signal the end of input: silence past the
        // encoder's delay (2048 frames) and one frame pushes the last
        // samples out.
        self.pcm
            .resize(self.pcm.len() + 4 * 1024 * self.channels, 0);
        self.drain(true)?;
        Ok(self.out.flush()?)
    }
}
