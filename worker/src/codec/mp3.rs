//! MP3 by LAME at a constant bitrate, at its default quality (-q 3).

use super::CodecError;
use mp3lame_encoder::{Bitrate, Builder, DualPcm, FlushGap, MonoPcm, Quality};
use std::io::Write;

pub(super) struct Encoder<W: Write> {
    enc: mp3lame_encoder::Encoder,
    buf: Vec<u8>,
    out: W,
}

fn bitrate(kbps: u32) -> Result<Bitrate, CodecError> {
    use Bitrate::*;
    Ok(match kbps {
        32 => Kbps32,
        40 => Kbps40,
        48 => Kbps48,
        64 => Kbps64,
        80 => Kbps80,
        96 => Kbps96,
        112 => Kbps112,
        128 => Kbps128,
        160 => Kbps160,
        192 => Kbps192,
        224 => Kbps224,
        256 => Kbps256,
        320 => Kbps320,
        other => {
            return Err(CodecError::lib(
                "mp3",
                format!("{other} kb/s is not an MP3 bitrate"),
            ))
        }
    })
}

impl<W: Write> Encoder<W> {
    pub(super) fn new(kbps: u32, rate: u32, channels: usize, out: W) -> Result<Self, CodecError> {
        let err = |e: mp3lame_encoder::BuildError| {
            CodecError::lib("mp3", format!("{kbps}k at {rate} Hz: {e}"))
        };
        let mut b = Builder::new().ok_or_else(|| CodecError::lib("mp3", "LAME did not start"))?;
        b.set_num_channels(channels as u8).map_err(err)?;
        b.set_sample_rate(rate).map_err(err)?;
        b.set_brate(bitrate(kbps)?).map_err(err)?;
        // LAME's own default for CBR (-q 3), which ffmpeg's libmp3lame
        // keeps unless told otherwise: what a platform transcoding with
        // ffmpeg runs (and 30% cheaper than -q 2).
        b.set_quality(Quality::VeryNice).map_err(err)?;
        // The Xing/LAME frame would need rewriting once the stream is done
        // (a placeholder otherwise, which decoders read differently).
        b.set_to_write_vbr_tag(false).map_err(err)?;
        Ok(Self {
            enc: b.build().map_err(err)?,
            buf: Vec::new(),
            out,
        })
    }

    fn emit(&mut self) -> Result<(), CodecError> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write> super::Encode for Encoder<W> {
    fn write(&mut self, planar: &[&[f32]]) -> Result<(), CodecError> {
        let n = planar[0].len();
        self.buf
            .reserve(mp3lame_encoder::max_required_buffer_size(n));
        let r = match planar {
            [m] => self.enc.encode_to_vec(MonoPcm(m), &mut self.buf),
            [l, r, ..] => self
                .enc
                .encode_to_vec(DualPcm { left: l, right: r }, &mut self.buf),
            [] => return Ok(()),
        };
        r.map_err(|e| CodecError::lib("mp3", e))?;
        self.emit()
    }

    fn finish(mut self: Box<Self>) -> Result<(), CodecError> {
        self.buf.reserve(7200);
        self.enc
            .flush_to_vec::<FlushGap>(&mut self.buf)
            .map_err(|e| CodecError::lib("mp3", e))?;
        self.emit()?;
        Ok(self.out.flush()?)
    }
}

/// Decodes an MP3 file to f32 by minimp3 (float output, nothing clamped),
/// reading it a window at a time.
pub(super) fn decode(
    path: &std::path::Path,
    limits: &crate::decode::DecodeLimits,
    mut f: impl FnMut(u32, &[&[f32]]),
) -> Result<(), CodecError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| CodecError::file(path, e))?;
    let mut dec = rmp3::RawDecoder::new();
    let mut pcm = [0f32; rmp3::MAX_SAMPLES_PER_FRAME];
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 17);
    let mut planar: Vec<Vec<f32>> = Vec::new();
    let mut eof = false;
    let mut done = 0f64;
    loop {
        if !eof && buf.len() < 1 << 16 {
            let have = buf.len();
            buf.resize(have + (1 << 16), 0);
            let n = file
                .read(&mut buf[have..])
                .map_err(|e| CodecError::file(path, e))?;
            buf.truncate(have + n);
            eof = n == 0;
        }
        let Some((frame, used)) = dec.next(&buf, &mut pcm) else {
            if eof {
                return Ok(());
            }
            continue;
        };
        if let rmp3::Frame::Audio(a) = frame {
            let (nch, rate) = (a.channels() as usize, a.sample_rate());
            if nch == 0 || nch > limits.max_channels || rate == 0 {
                return Err(CodecError::limit(
                    "mp3",
                    format!("a frame of {nch} channels at {rate} Hz"),
                ));
            }
            let s = a.samples();
            let n = a.sample_count();
            planar.resize(nch, Vec::new());
            for (c, out) in planar.iter_mut().enumerate() {
                out.clear();
                out.extend((0..n).map(|i| s[i * nch + c]));
            }
            done += n as f64 / rate as f64;
            if done > limits.max_seconds {
                return Err(CodecError::limit(
                    "mp3",
                    format!("longer than {} s", limits.max_seconds),
                ));
            }
            let slices: Vec<&[f32]> = planar.iter().map(Vec::as_slice).collect();
            f(rate, &slices);
        }
        buf.drain(..used.max(1).min(buf.len()));
    }
}
