//! Ogg Opus inputs: libopus (the one the codec check links) as a symphonia
//! decoder, so an Opus file is read by the same reader, under the same
//! limits, as every other input (symphonia 0.5 has no Opus decoder).

use opus_codec::{Channels, SampleRate};
use std::sync::Mutex;
use symphonia::core::audio::{
    AsAudioBufferRef, AudioBuffer, AudioBufferRef, Channels as Layout, Signal, SignalSpec,
};
use symphonia::core::codecs::{
    CodecDescriptor, CodecParameters, Decoder, DecoderOptions, FinalizeResult, CODEC_TYPE_OPUS,
};
use symphonia::core::errors::{Error, Result};
use symphonia::core::formats::Packet;
use symphonia::core::support_codec;

/// Opus always decodes at 48 kHz.
const RATE: u32 = 48_000;
/// The longest Opus packet: 120 ms at 48 kHz.
const MAX_FRAMES: usize = 5760;

pub struct OpusDecoder {
    params: CodecParameters,
    /// libopus's state is not shared between threads; the lock only makes
    /// the decoder `Sync` as symphonia asks (it is never contended).
    dec: Mutex<opus_codec::Decoder>,
    channels: usize,
    pcm: Vec<f32>,
    buf: AudioBuffer<f32>,
    /// Frames still to drop from the start: the stream's pre-skip.
    skip: usize,
    /// The header's output gain, which RFC 7845 says players apply.
    gain: f32,
}

/// (channels, pre-skip, output gain in Q7.8 dB) of an `OpusHead`.
fn head(extra: &[u8]) -> Result<(usize, u16, i16)> {
    if extra.len() < 19 || &extra[..8] != b"OpusHead" {
        return Err(Error::DecodeError("opus: no OpusHead header"));
    }
    let channels = extra[9] as usize;
    if extra[18] != 0 || !(1..=2).contains(&channels) {
        return Err(Error::Unsupported(
            "opus: only mono and stereo streams (channel mapping family 0)",
        ));
    }
    let pre_skip = u16::from_le_bytes([extra[10], extra[11]]);
    let gain = i16::from_le_bytes([extra[16], extra[17]]);
    Ok((channels, pre_skip, gain))
}

impl Decoder for OpusDecoder {
    fn try_new(params: &CodecParameters, _: &DecoderOptions) -> Result<Self> {
        let extra = params
            .extra_data
            .as_deref()
            .ok_or(Error::DecodeError("opus: no OpusHead header"))?;
        let (channels, pre_skip, gain_q8) = head(extra)?;
        let (ch, layout) = match channels {
            1 => (Channels::Mono, Layout::FRONT_LEFT),
            _ => (Channels::Stereo, Layout::FRONT_LEFT | Layout::FRONT_RIGHT),
        };
        let dec = opus_codec::Decoder::new(SampleRate::Hz48000, ch)
            .map_err(|_| Error::DecodeError("opus: the decoder would not start"))?;
        Ok(Self {
            params: params.clone(),
            dec: Mutex::new(dec),
            channels,
            pcm: vec![0.0; MAX_FRAMES * channels],
            buf: AudioBuffer::new(MAX_FRAMES as u64, SignalSpec::new(RATE, layout)),
            skip: pre_skip as usize,
            gain: 10f32.powf(gain_q8 as f32 / (20.0 * 256.0)),
        })
    }

    fn supported_codecs() -> &'static [CodecDescriptor] {
        &[support_codec!(CODEC_TYPE_OPUS, "opus", "Opus (libopus)")]
    }

    fn reset(&mut self) {
        if let Ok(d) = self.dec.get_mut() {
            let _ = d.reset();
        }
    }

    fn codec_params(&self) -> &CodecParameters {
        &self.params
    }

    fn decode(&mut self, packet: &Packet) -> Result<AudioBufferRef<'_>> {
        let dec = self
            .dec
            .get_mut()
            .map_err(|_| Error::DecodeError("opus: decoder poisoned"))?;
        let n = dec
            .decode_float(packet.buf(), &mut self.pcm, false)
            .map_err(|_| Error::DecodeError("opus: corrupt packet"))?;
        let from = self.skip.min(n);
        self.skip -= from;
        self.buf.clear();
        self.buf.render_reserved(Some(n - from));
        for c in 0..self.channels {
            let interleaved = self.pcm[from * self.channels..n * self.channels]
                .iter()
                .skip(c)
                .step_by(self.channels);
            for (o, s) in self.buf.chan_mut(c).iter_mut().zip(interleaved) {
                *o = s * self.gain;
            }
        }
        Ok(self.buf.as_audio_buffer_ref())
    }

    fn finalize(&mut self) -> FinalizeResult {
        FinalizeResult::default()
    }

    fn last_decoded(&self) -> AudioBufferRef<'_> {
        self.buf.as_audio_buffer_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_read_and_surround_refused() {
        let mut h = b"OpusHead".to_vec();
        h.extend_from_slice(&[1, 2, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0x00, 0x01, 0]);
        assert_eq!(head(&h).unwrap(), (2, 312, 256));
        h[18] = 1;
        assert!(matches!(head(&h), Err(Error::Unsupported(_))));
        assert!(head(&h[..10]).is_err());
    }
}
