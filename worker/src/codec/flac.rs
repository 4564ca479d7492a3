//! FLAC deliverables: the master's own integer samples, losslessly, at its
//! rate and depth, with Vorbis comments (title, artist, album, ISRC and
//! ReplayGain). Frames are encoded and written as the WAV is read (flacenc,
//! pure Rust), and STREAMINFO — length, frame sizes, MD5 — is written over
//! its placeholder at the end, so memory is one block whatever the length.

use super::tags::{comment_body, FileTags};
use super::CodecError;
use flacenc::bitsink::ByteSink;
use flacenc::component::{
    BitRepr, ChannelAssignment, Frame, FrameHeader, FrameOffset, StreamInfo, SubFrame, Verbatim,
};
use flacenc::error::Verify;
use flacenc::source::{Context, Fill, FrameBuf};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

const STREAMINFO: u8 = 0;
const VORBIS_COMMENT: u8 = 4;
/// Where STREAMINFO's body starts: after "fLaC" and its block header.
const STREAMINFO_AT: u64 = 8;

/// Writes `wav` (an integer PCM master) to `out` as FLAC.
pub fn write(wav: &Path, out: &Path, tags: &FileTags) -> Result<(), CodecError> {
    let e = |e: &dyn std::fmt::Display| CodecError::lib("flac", e);
    let io = |e: std::io::Error| CodecError::file(out, e);
    let mut r = hound::WavReader::open(wav).map_err(|x| e(&x))?;
    let spec = r.spec();
    if spec.sample_format != hound::SampleFormat::Int {
        return Err(e(&"FLAC carries integer samples; the master is float"));
    }
    let (ch, bits, rate) = (
        spec.channels as usize,
        spec.bits_per_sample as usize,
        spec.sample_rate as usize,
    );
    let cfg = flacenc::config::Encoder::default()
        .into_verified()
        .map_err(|(_, x)| e(&x))?;
    let block = cfg.block_size;
    let mut info = StreamInfo::new(rate, ch, bits).map_err(|x| e(&x))?;
    let mut w = BufWriter::with_capacity(1 << 16, File::create(out).map_err(io)?);
    w.write_all(b"fLaC").map_err(io)?;
    // A placeholder: the real one is known once every frame is written.
    let mut sink = ByteSink::new();
    write_block(&mut w, STREAMINFO, false, bits_of(&info, &mut sink)?).map_err(io)?;
    // Tags are bounded when read (decode::MAX_TAG_CHARS); a cut body would
    // be a corrupt block, so a longer one is refused.
    let comments = comment_body("flacenc", &tags.comments());
    if comments.len() >= 1 << 24 {
        let what = format!("{} bytes of tags (FLAC holds 16 MiB)", comments.len());
        return Err(CodecError::limit("flac", what));
    }
    write_block(&mut w, VORBIS_COMMENT, true, &comments).map_err(io)?;

    let mut fb = FrameBuf::with_size(ch, block).map_err(|x| e(&x))?;
    let mut ctx = Context::new(bits, ch);
    let mut buf = Vec::with_capacity(block * ch);
    let mut samples = r.samples::<i32>();
    for n in 0.. {
        buf.clear();
        for s in samples.by_ref().take(block * ch) {
            buf.push(s.map_err(|x| e(&x))?);
        }
        if buf.is_empty() {
            break;
        }
        if buf.len() % ch != 0 {
            return Err(e(&"the master ends inside a frame"));
        }
        (&mut fb, &mut ctx)
            .fill_interleaved(&buf)
            .map_err(|x| e(&x))?;
        let mut frame = flacenc::encode_fixed_size_frame(&cfg, &fb, n, &info).map_err(|x| e(&x))?;
        // flacenc's Rice parameters stop at 14: on noise-like 24-bit frames
        // its residuals can take far more than the samples themselves (one
        // frame of 900 MB was seen), so such a frame goes verbatim.
        if frame.count_bits() > buf.len() * bits + VERBATIM_HEADER_BITS {
            frame = verbatim(&buf, ch, bits, rate, n).map_err(|x| e(&x))?;
        }
        info.update_frame_info(&frame);
        w.write_all(bits_of(&frame, &mut sink)?).map_err(io)?;
        if buf.len() < block * ch {
            break;
        }
    }
    info.set_md5_digest(&ctx.md5_digest());
    info.set_total_samples(ctx.total_samples());
    // A fixed-blocksize stream: every frame but the last is `block` long.
    info.set_block_sizes(block, block).map_err(|x| e(&x))?;
    let mut f = w.into_inner().map_err(|x| io(x.into_error()))?;
    f.seek(SeekFrom::Start(STREAMINFO_AT)).map_err(io)?;
    f.write_all(bits_of(&info, &mut sink)?).map_err(io)?;
    f.sync_all().map_err(io)
}

/// What a verbatim frame carries besides its samples, at most: frame
/// header and CRCs, subframe headers.
const VERBATIM_HEADER_BITS: usize = 8 * 32;

/// Frame `n` of `interleaved` as verbatim subframes, channel by channel.
fn verbatim(
    interleaved: &[i32],
    ch: usize,
    bits: usize,
    rate: usize,
    n: usize,
) -> Result<Frame, flacenc::error::VerifyError> {
    let len = interleaved.len() / ch;
    let header = FrameHeader::new(
        len,
        ChannelAssignment::Independent(ch as u8),
        bits,
        rate,
        FrameOffset::Frame(n as u32),
    )?;
    let subframes = (0..ch)
        .map(|c| {
            let x: Vec<i32> = interleaved.iter().skip(c).step_by(ch).copied().collect();
            Verbatim::new(&x, bits).map(SubFrame::from)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Frame::new(header, subframes.into_iter())
}

/// A component's bytes, in `sink` (reused: one frame's worth of memory).
fn bits_of<'a>(c: &impl BitRepr, sink: &'a mut ByteSink) -> Result<&'a [u8], CodecError> {
    sink.clear();
    c.write(sink)
        .map_err(|x| CodecError::lib("flac", format!("{x:?}")))?;
    Ok(sink.as_slice())
}

/// A metadata block: type and last-block flag, 24-bit length, body.
fn write_block(w: &mut impl Write, kind: u8, last: bool, body: &[u8]) -> std::io::Result<()> {
    let len = body.len() as u32;
    let head = [
        kind | if last { 0x80 } else { 0 },
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
    ];
    w.write_all(&head).and_then(|_| w.write_all(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes with symphonia's FLAC decoder (checks the MD5 and frame
    /// CRCs it reads) and compares every sample with the WAV's.
    #[test]
    fn flac_holds_the_masters_samples_and_its_tags() {
        let dir = tempfile::tempdir().unwrap();
        // The last: white noise at 24 bits, where flacenc's own choice
        // once made a frame of 900 MB.
        for (bits, ch, frames, noise) in [
            (16u16, 2usize, 10_000usize, false),
            (24, 1, 4096 * 3, false),
            (24, 2, 20_000, true),
        ] {
            let wav = dir.path().join(format!("m{bits}.wav"));
            let spec = hound::WavSpec {
                channels: ch as u16,
                sample_rate: 44_100,
                bits_per_sample: bits,
                sample_format: hound::SampleFormat::Int,
            };
            let mut w = hound::WavWriter::create(&wav, spec).unwrap();
            let full = (1i64 << (bits - 1)) - 1;
            let mut want = Vec::new();
            for i in 0..frames * ch {
                let x = if noise {
                    let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
                    (h as i64 - (1 << 23)) as i32 / 2
                } else {
                    ((i as f64 * 0.0123).sin() * 0.9 * full as f64) as i32 ^ (i as i32 & 3)
                };
                want.push(x);
                w.write_sample(x).unwrap();
            }
            w.finalize().unwrap();
            let out = dir.path().join(format!("m{bits}.flac"));
            let mut tags = FileTags::default();
            tags.track.title = Some("Song".into());
            tags.lufs = Some(-14.0);
            write(&wav, &out, &tags).unwrap();

            let (flac_len, wav_len) =
                (out.metadata().unwrap().len(), wav.metadata().unwrap().len());
            assert!(
                flac_len < wav_len + 4096,
                "{bits}-bit: {flac_len} B of FLAC for {wav_len} B of WAV"
            );
            let (rate, got, md5_ok) = decode(&out, bits);
            assert_eq!(rate, 44_100);
            assert_eq!(got.len(), want.len(), "{bits}-bit length");
            assert!(got == want, "{bits}-bit samples differ");
            assert_eq!(md5_ok, Some(true), "STREAMINFO's MD5");
            let bytes = std::fs::read(&out).unwrap();
            let find = |s: &[u8]| bytes.windows(s.len()).any(|w| w == s);
            assert!(find(b"TITLE=Song"));
            assert!(find(b"REPLAYGAIN_TRACK_GAIN=-4.00 dB"));
        }
    }

    fn decode(path: &Path, bits: u16) -> (u32, Vec<i32>, Option<bool>) {
        use symphonia::core::audio::SampleBuffer;
        use symphonia::core::codecs::DecoderOptions;
        let src = symphonia::core::io::MediaSourceStream::new(
            Box::new(File::open(path).unwrap()),
            Default::default(),
        );
        let probed = symphonia::default::get_probe()
            .format(
                &Default::default(),
                src,
                &Default::default(),
                &Default::default(),
            )
            .unwrap();
        let mut format = probed.format;
        let track = format.default_track().unwrap().clone();
        let mut dec = symphonia::default::get_codecs()
            .make(&track.codec_params, &DecoderOptions { verify: true })
            .unwrap();
        let scale = (1i64 << (bits - 1)) as f64;
        let mut out = Vec::new();
        while let Ok(p) = format.next_packet() {
            let b = dec.decode(&p).unwrap();
            let mut s = SampleBuffer::<f64>::new(b.capacity() as u64, *b.spec());
            s.copy_interleaved_ref(b);
            out.extend(s.samples().iter().map(|&x| (x * scale).round() as i32));
        }
        let rate = track.codec_params.sample_rate.unwrap();
        (rate, out, dec.finalize().verify_ok)
    }
}
