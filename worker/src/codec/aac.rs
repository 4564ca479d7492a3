//! AAC-LC by the Fraunhofer FDK encoder, in an MP4 file (`.m4a`) with
//! iTunes-style tags: raw access units in an `mp4a` track, then an `ilst`
//! with title, artist, album, ISRC, ReplayGain and `iTunSMPB` (the encoder's
//! delay and padding, which players use for gapless playback). ADTS, the
//! bare stream, has no place for any of them.

use super::tags::FileTags;
use super::CodecError;
use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, EncoderParams, Transport};
use mp4::{AacConfig, ChannelConfig, MediaConfig, Mp4Config, Mp4Sample, Mp4Writer, TrackConfig};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Frames per AAC-LC access unit.
const FRAME: usize = 1024;

pub(super) struct Encoder {
    enc: fdk_aac::enc::Encoder,
    channels: usize,
    /// Interleaved 16-bit input not yet taken by the encoder (the FDK
    /// encoder takes integer PCM only).
    pcm: Vec<i16>,
    buf: Vec<u8>,
    mp4: Mp4Writer<BufWriter<File>>,
    path: PathBuf,
    tags: FileTags,
    /// Access units written, and input frames taken (for `iTunSMPB`).
    units: u64,
    input: u64,
    /// The encoder's delay in frames: the first this many decoded are priming.
    delay: u32,
}

fn mp4_err(path: &Path, e: mp4::Error) -> CodecError {
    match e {
        mp4::Error::IoError(source) => CodecError::file(path, source),
        other => CodecError::lib("aac", format!("mp4: {other}")),
    }
}

fn freq_index(rate: u32) -> Result<mp4::SampleFreqIndex, CodecError> {
    use mp4::SampleFreqIndex as F;
    Ok(match rate {
        96_000 => F::Freq96000,
        88_200 => F::Freq88200,
        64_000 => F::Freq64000,
        48_000 => F::Freq48000,
        44_100 => F::Freq44100,
        32_000 => F::Freq32000,
        24_000 => F::Freq24000,
        22_050 => F::Freq22050,
        16_000 => F::Freq16000,
        other => {
            return Err(CodecError::lib(
                "aac",
                format!("no MP4 rate index for {other} Hz"),
            ))
        }
    })
}

impl Encoder {
    pub(super) fn new(
        kbps: u32,
        rate: u32,
        channels: usize,
        file: File,
        path: &Path,
        tags: &FileTags,
    ) -> Result<Self, CodecError> {
        let enc = fdk_aac::enc::Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(kbps * 1000),
            sample_rate: rate,
            transport: Transport::Raw,
            channels: if channels == 1 {
                ChannelMode::Mono
            } else {
                ChannelMode::Stereo
            },
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|e| CodecError::lib("aac", format!("{kbps}k at {rate} Hz: {e}")))?;
        let delay = enc.info().map_err(|e| CodecError::lib("aac", e))?.nDelay;
        let brand = |b: &str| b.parse().expect("a four-letter brand");
        let config = Mp4Config {
            major_brand: brand("M4A "),
            minor_version: 512,
            compatible_brands: vec![brand("M4A "), brand("isom"), brand("iso2"), brand("mp41")],
            timescale: rate,
        };
        let out = BufWriter::with_capacity(1 << 16, file);
        let mut mp4 = Mp4Writer::write_start(out, &config).map_err(|e| mp4_err(path, e))?;
        let track = TrackConfig {
            track_type: mp4::TrackType::Audio,
            timescale: rate,
            language: "und".into(),
            media_conf: MediaConfig::AacConfig(AacConfig {
                bitrate: kbps * 1000,
                profile: mp4::AudioObjectType::AacLowComplexity,
                freq_index: freq_index(rate)?,
                chan_conf: if channels == 1 {
                    ChannelConfig::Mono
                } else {
                    ChannelConfig::Stereo
                },
            }),
        };
        mp4.add_track(&track).map_err(|e| mp4_err(path, e))?;
        Ok(Self {
            enc,
            channels,
            pcm: Vec::new(),
            buf: vec![0; 8192],
            mp4,
            path: path.to_path_buf(),
            tags: tags.clone(),
            units: 0,
            input: 0,
            delay,
        })
    }

    fn drain(&mut self, all: bool) -> Result<(), CodecError> {
        let frame = FRAME * self.channels;
        let mut used = 0;
        while self.pcm.len() - used >= frame || (all && used < self.pcm.len()) {
            let end = (used + frame).min(self.pcm.len());
            let info = self
                .enc
                .encode(&self.pcm[used..end], &mut self.buf)
                .map_err(|e| CodecError::lib("aac", e))?;
            if info.output_size > 0 {
                let sample = Mp4Sample {
                    start_time: self.units * FRAME as u64,
                    duration: FRAME as u32,
                    rendering_offset: 0,
                    is_sync: true,
                    bytes: self.buf[..info.output_size].to_vec().into(),
                };
                let path = self.path.clone();
                self.mp4
                    .write_sample(1, &sample)
                    .map_err(|e| mp4_err(&path, e))?;
                self.units += 1;
            }
            if info.input_consumed == 0 && info.output_size == 0 {
                break;
            }
            used += info.input_consumed;
        }
        self.pcm.drain(..used);
        Ok(())
    }
}

/// The `mp4` crate (0.14) writes the esds box's SL config descriptor as
/// `06 00 00` (length 0, then a stray byte) where ISO 14496-1 has `06 01 02`
/// (length 1, predefined 2 for MP4): readers that walk the descriptors
/// (mp4ameta, strict players) stop there. The box sits in `moov`, at the
/// end of the file; the three bytes are rewritten in place.
fn fix_sl_config(path: &Path) -> Result<(), CodecError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e| CodecError::file(path, e);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    // moov holds 4-8 bytes per access unit: 4 MiB covers hours.
    let from = len.saturating_sub(4 << 20);
    f.seek(SeekFrom::Start(from)).map_err(io)?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).map_err(io)?;
    let at = tail
        .windows(4)
        .position(|w| w == b"esds")
        .filter(|&i| i >= 4)
        .ok_or_else(|| CodecError::lib("aac", "mp4: no esds box written"))?;
    let size = u32::from_be_bytes(tail[at - 4..at].try_into().expect("4 bytes")) as usize;
    let end = at - 4 + size;
    if end > tail.len() || end < at + 3 {
        return Err(CodecError::lib("aac", "mp4: esds box out of bounds"));
    }
    if tail[end - 3..end] == [0x06, 0x00, 0x00] {
        f.seek(SeekFrom::Start(from + end as u64 - 3)).map_err(io)?;
        f.write_all(&[0x06, 0x01, 0x02]).map_err(io)?;
    }
    Ok(())
}

/// Where a finished file's audio lies: the encoder's priming, then
/// `input` real frames, in `units` access units.
struct Extent {
    delay: u32,
    units: u64,
    input: u64,
}

/// Writes the `ilst` tags into the finished file at `path`.
fn write_tags(path: &Path, tags: &FileTags, x: Extent) -> Result<(), CodecError> {
    use mp4ameta::{Data, FreeformIdent};
    let fail = |e: mp4ameta::Error| CodecError::lib("aac", format!("mp4 tags: {e}"));
    let mut tag = mp4ameta::Tag::read_from_path(path).map_err(fail)?;
    let t = &tags.track;
    if let Some(v) = &t.title {
        tag.set_title(v.clone());
    }
    if let Some(v) = &t.artist {
        tag.set_artist(v.clone());
    }
    if let Some(v) = &t.album {
        tag.set_album(v.clone());
    }
    if let Some(v) = &t.isrc {
        tag.set_isrc(v.clone());
    }
    for (k, v) in tags.comments() {
        if k.starts_with("REPLAYGAIN_") {
            let name = k.to_lowercase();
            tag.set_data(
                FreeformIdent::new_borrowed("com.apple.iTunes", &name),
                Data::Utf8(v),
            );
        }
    }
    // Priming, padding and the real length, as iTunes writes them.
    let total = x.units * FRAME as u64;
    let padding = total.saturating_sub(x.delay as u64 + x.input);
    let smpb = format!(
        " 00000000 {:08X} {:08X} {:016X}{}",
        x.delay,
        padding,
        x.input,
        " 00000000".repeat(8)
    );
    tag.set_data(
        FreeformIdent::new_static("com.apple.iTunes", "iTunSMPB"),
        Data::Utf8(smpb),
    );
    tag.write_to_path(path).map_err(fail)
}

impl super::Encode for Encoder {
    fn write(&mut self, planar: &[&[f32]]) -> Result<(), CodecError> {
        let n = planar[0].len();
        self.input += n as u64;
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
            .resize(self.pcm.len() + 4 * FRAME * self.channels, 0);
        self.drain(true)?;
        let Encoder {
            mut mp4,
            path,
            tags,
            units,
            input,
            delay,
            ..
        } = *self;
        mp4.write_end().map_err(|e| mp4_err(&path, e))?;
        let mut out = mp4.into_writer();
        out.flush().map_err(|e| CodecError::file(&path, e))?;
        drop(out);
        fix_sl_config(&path)?;
        write_tags(
            &path,
            &tags,
            Extent {
                delay,
                units,
                input,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::Encode;
    use super::*;
    use crate::decode::Tags;

    /// An encode reads back by mp4ameta (which walks the esds descriptors
    /// the `mp4` crate writes wrong) with its tags and gapless info.
    #[test]
    fn an_m4a_reads_back_with_its_tags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.m4a");
        let file = File::create(&path).unwrap();
        let tags = FileTags {
            track: Tags {
                title: Some("T".into()),
                artist: Some("A".into()),
                album: Some("B".into()),
                isrc: Some("QZABC2600001".into()),
            },
            lufs: Some(-14.0),
            peak: Some(0.9),
        };
        let e = Encoder::new(128, 48_000, 2, file, &path, &tags).unwrap();
        let mut e: Box<dyn Encode> = Box::new(e);
        let s: Vec<f32> = (0..48_000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
        e.write(&[&s, &s]).unwrap();
        e.finish().unwrap();
        let tag = mp4ameta::Tag::read_from_path(&path).unwrap();
        assert_eq!(tag.title(), Some("T"));
        assert_eq!(tag.isrc(), Some("QZABC2600001"));
        let smpb = mp4ameta::FreeformIdent::new_static("com.apple.iTunes", "iTunSMPB");
        let smpb = tag.strings_of(&smpb).next().unwrap().to_string();
        let length = u64::from_str_radix(smpb.split_whitespace().nth(3).unwrap(), 16).unwrap();
        assert_eq!(length, 48_000, "{smpb}");
    }
}
