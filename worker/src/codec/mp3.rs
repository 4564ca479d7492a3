//! MP3 by LAME at a constant bitrate, its recommended quality (-q 2).

use mp3lame_encoder::{Bitrate, Builder, DualPcm, FlushNoGap, MonoPcm, Quality};
use std::io::Write;

pub struct Encoder<W: Write> {
    enc: mp3lame_encoder::Encoder,
    buf: Vec<u8>,
    out: W,
}

fn bitrate(kbps: u32) -> Result<Bitrate, String> {
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
        other => return Err(format!("mp3: {other} kb/s is not an MP3 bitrate")),
    })
}

impl<W: Write> Encoder<W> {
    pub fn new(kbps: u32, rate: u32, channels: usize, out: W) -> Result<Self, String> {
        let err = |e: mp3lame_encoder::BuildError| format!("mp3 {kbps}k at {rate} Hz: {e}");
        let mut b = Builder::new().ok_or("mp3: LAME did not start")?;
        b.set_num_channels(channels as u8).map_err(err)?;
        b.set_sample_rate(rate).map_err(err)?;
        b.set_brate(bitrate(kbps)?).map_err(err)?;
        b.set_quality(Quality::NearBest).map_err(err)?;
        Ok(Self {
            enc: b.build().map_err(err)?,
            buf: Vec::new(),
            out,
        })
    }

    fn emit(&mut self) -> Result<(), String> {
        self.out.write_all(&self.buf).map_err(|e| e.to_string())?;
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write> super::Encode for Encoder<W> {
    fn write(&mut self, planar: &[&[f32]]) -> Result<(), String> {
        let n = planar[0].len();
        self.buf.reserve(mp3lame_encoder::max_required_buffer_size(n));
        let r = match planar {
            [m] => self.enc.encode_to_vec(MonoPcm(*m), &mut self.buf),
            [l, r, ..] => self.enc.encode_to_vec(DualPcm { left: l, right: r }, &mut self.buf),
            [] => return Ok(()),
        };
        r.map_err(|e| format!("mp3: {e}"))?;
        self.emit()
    }

    fn finish(mut self: Box<Self>) -> Result<(), String> {
        self.buf.reserve(7200);
        self.enc
            .flush_to_vec::<FlushNoGap>(&mut self.buf)
            .map_err(|e| format!("mp3: {e}"))?;
        self.emit()?;
        self.out.flush().map_err(|e| e.to_string())
    }
}
