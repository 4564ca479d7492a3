//! Opus by libopus (music mode, VBR at the bitrate) in an Ogg stream
//! (RFC 7845), at 48 kHz, the codec's one full-band rate.

use super::CodecError;
use crate::decode::DecodeLimits;
use ogg::{PacketReader, PacketWriteEndInfo, PacketWriter};
use opus_codec::{Application, Bitrate, Channels, SampleRate};
use std::io::Write;
use std::path::Path;

pub(super) const RATE: u32 = 48_000;
/// 20 ms frames, libopus's default for music.
const FRAME: usize = 960;
const SERIAL: u32 = 0x4c4d_0002;

pub(super) struct Encoder<W: Write> {
    enc: opus_codec::Encoder,
    channels: usize,
    /// Interleaved 48 kHz input not yet a whole frame.
    pcm: Vec<f32>,
    packet: Vec<u8>,
    /// Samples (at 48 kHz) encoded, and the pre-skip (the encoder's delay).
    granule: u64,
    pre_skip: u64,
    /// Input frames taken, at 48 kHz: the stream's end trims to them.
    input: u64,
    /// The packet waiting to be written (the last gets the end flag).
    held: Option<Vec<u8>>,
    out: PacketWriter<'static, W>,
}

fn opus_err(e: opus_codec::Error) -> CodecError {
    CodecError::lib("opus", e)
}

impl<W: Write> Encoder<W> {
    /// `rate` is the source's (written in the header); input comes at 48 kHz.
    pub(super) fn new(
        kbps: u32,
        rate: u32,
        channels: usize,
        out: W,
        file_tags: &super::tags::FileTags,
    ) -> Result<Self, CodecError> {
        let ch = if channels == 1 {
            Channels::Mono
        } else {
            Channels::Stereo
        };
        let mut enc = opus_codec::Encoder::new(SampleRate::Hz48000, ch, Application::Audio)
            .map_err(opus_err)?;
        enc.set_bitrate(Bitrate::Custom(kbps as i32 * 1000))
            .map_err(opus_err)?;
        let pre_skip = enc.lookahead().map_err(opus_err)? as u64;
        let mut out = PacketWriter::new(out);
        // Identification header: version 1, channels, pre-skip, the input's
        // rate, no output gain, mapping family 0.
        let mut head = b"OpusHead".to_vec();
        head.push(1);
        head.push(channels as u8);
        head.extend_from_slice(&(pre_skip as u16).to_le_bytes());
        head.extend_from_slice(&rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        out.write_packet(head, SERIAL, PacketWriteEndInfo::EndPage, 0)?;
        // RFC 7845: gain as R128_TRACK_GAIN, not ReplayGain's fields.
        let mut comments: Vec<(String, String)> = file_tags
            .comments()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("REPLAYGAIN"))
            .collect();
        if let Some(g) = file_tags.r128_gain() {
            comments.push(("R128_TRACK_GAIN".into(), g.to_string()));
        }
        let mut tags = b"OpusTags".to_vec();
        tags.extend_from_slice(&super::tags::comment_body("libopus", &comments));
        out.write_packet(tags, SERIAL, PacketWriteEndInfo::EndPage, 0)?;
        Ok(Self {
            enc,
            channels,
            pcm: Vec::new(),
            packet: vec![0; 4000],
            granule: 0,
            pre_skip,
            input: 0,
            held: None,
            out,
        })
    }

    fn take(&mut self, planar: &[&[f32]]) {
        let n = planar.first().map_or(0, |c| c.len());
        self.input += n as u64;
        for i in 0..n {
            for c in planar {
                self.pcm.push(c[i]);
            }
        }
    }

    fn encode_frames(&mut self, all: bool) -> Result<(), CodecError> {
        let frame = FRAME * self.channels;
        if all {
            // The last frame padded with silence, and enough more for the
            // encoder's delay to come out.
            let want =
                (self.pcm.len() / frame + 1) * frame + self.pre_skip as usize * self.channels;
            let want = want.div_ceil(frame) * frame;
            self.pcm.resize(want, 0.0);
        }
        let mut used = 0;
        while self.pcm.len() - used >= frame {
            let n = self
                .enc
                .encode_float(&self.pcm[used..used + frame], &mut self.packet)
                .map_err(opus_err)?;
            used += frame;
            self.granule += FRAME as u64;
            if let Some(p) = self.held.take() {
                let gp = (self.granule - FRAME as u64).min(self.pre_skip + self.input);
                self.out
                    .write_packet(p, SERIAL, PacketWriteEndInfo::NormalPacket, gp)?;
            }
            self.held = Some(self.packet[..n].to_vec());
        }
        self.pcm.drain(..used);
        Ok(())
    }
}

impl<W: Write> super::Encode for Encoder<W> {
    fn write(&mut self, planar: &[&[f32]]) -> Result<(), CodecError> {
        self.take(planar);
        self.encode_frames(false)
    }

    fn finish(mut self: Box<Self>) -> Result<(), CodecError> {
        self.encode_frames(true)?;
        // The end granule trims the padding: input plus pre-skip.
        let end = self.pre_skip + self.input;
        let last = self.held.take().unwrap_or_default();
        self.out
            .write_packet(last, SERIAL, PacketWriteEndInfo::EndStream, end)?;
        let mut w = self.out.into_inner();
        Ok(w.flush()?)
    }
}

/// Decodes an Ogg Opus file (mono or stereo, family 0) to f32 at 48 kHz,
/// dropping the pre-skip and trimming to the last page's granule.
pub(super) fn decode(
    path: &Path,
    limits: &DecodeLimits,
    mut f: impl FnMut(u32, &[&[f32]]),
) -> Result<(), CodecError> {
    let file = std::fs::File::open(path).map_err(|e| CodecError::file(path, e))?;
    let mut r = PacketReader::new(std::io::BufReader::new(file));
    let next = |r: &mut PacketReader<_>| {
        r.read_packet()
            .map_err(|e| CodecError::lib("opus", format!("ogg: {e}")))
    };
    let head = next(&mut r)?.ok_or_else(|| CodecError::lib("opus", "empty stream"))?;
    let h = &head.data;
    if h.len() < 19 || &h[..8] != b"OpusHead" || h[18] != 0 {
        return Err(CodecError::lib("opus", "not a mono/stereo OpusHead"));
    }
    let channels = h[9] as usize;
    if !(1..=2).contains(&channels) || channels > limits.max_channels {
        return Err(CodecError::limit("opus", format!("{channels} channels")));
    }
    let mut skip = u16::from_le_bytes([h[10], h[11]]) as u64;
    next(&mut r)?.ok_or_else(|| CodecError::lib("opus", "no OpusTags"))?;
    let ch = if channels == 1 {
        Channels::Mono
    } else {
        Channels::Stereo
    };
    let mut dec = opus_codec::Decoder::new(SampleRate::Hz48000, ch).map_err(opus_err)?;
    // 120 ms, the longest packet.
    let mut pcm = vec![0f32; 5760 * channels];
    let mut planar = vec![Vec::new(); channels];
    let max = (limits.max_seconds * RATE as f64) as u64;
    let mut done = 0u64;
    while let Some(p) = next(&mut r)? {
        let n = dec
            .decode_float(&p.data, &mut pcm, false)
            .map_err(opus_err)?;
        let mut from = 0usize;
        if skip > 0 {
            from = (skip as usize).min(n);
            skip -= from as u64;
        }
        let mut to = n;
        if p.last_in_stream() {
            // The granule counts the pre-skip too.
            let head = u16::from_le_bytes([h[10], h[11]]) as u64;
            let end = p.absgp_page().saturating_sub(head);
            to = to.min(from + end.saturating_sub(done) as usize);
        }
        if to <= from {
            continue;
        }
        done += (to - from) as u64;
        if done > max {
            return Err(CodecError::limit(
                "opus",
                format!("longer than {} s", limits.max_seconds),
            ));
        }
        for (c, out) in planar.iter_mut().enumerate() {
            out.clear();
            out.extend((from..to).map(|i| pcm[i * channels + c]));
        }
        let slices: Vec<&[f32]> = planar.iter().map(Vec::as_slice).collect();
        f(RATE, &slices);
    }
    Ok(())
}
