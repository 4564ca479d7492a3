//! Verifying a master only where a codec can take it over its ceiling.
//!
//! Lossy coding adds overshoot in proportion to the signal: a stretch of the
//! master whose sample peak stays [`NEAR_DB`] under the ceiling does not come
//! over it once encoded. So only the stretches that come nearer are encoded,
//! each with pre-roll (the encoder's analysis, bit reservoir and rate control
//! settle) and post-roll (its look-ahead and the decoder's overlap), starting
//! on the codec's frame grid so frames fall where a whole-file encode puts
//! them, faded in and out where cut from the middle of the master, then
//! decoded and measured from half-way through the pre-roll. The verdict is
//! always measured: nothing here predicts a peak.

use super::check::{level_difference, thread_cpu, CodecReport, MasterLevels};
use super::{decode, encode_rate, encoder, extension, BLOCK};
use crate::decode::{DecodeLimits, DecodeSource};
use crate::WorkerError;
use loopmind_dsp::measure::bs1770::BlockMeter;
use loopmind_dsp::measure::truepeak::TruePeakMeter;
use loopmind_dsp::pipeline::{self, Source};
use loopmind_dsp::targets::{Codec, Lossy};
use loopmind_dsp::{db_to_lin, lin_to_db, DspError};
use std::path::{Path, PathBuf};

/// How near its ceiling (dB, by sample peak) a stretch of master must come
/// to be encoded: the most a codec added to a stretch's peak on the
/// development corpus, with room for the inter-sample peak a sample peak
/// does not see (bench/RESULTS.md, "Verifying regions").
pub const NEAR_DB: f64 = 4.0;
/// Frames of master per hot-or-not decision.
const HOT_BLOCK: usize = 1024;
const PRE_ROLL_S: f64 = 1.0;
const POST_ROLL_S: f64 = 0.25;
/// Frames faded in and out where a region is cut from the master's middle.
const FADE: u64 = 1024;
/// Above this share of the master, the whole file is encoded instead: the
/// regions' rolls would cost about as much.
pub const WHOLE_ABOVE: f64 = 0.6;

/// The stretches of one master near its ceiling.
#[derive(Clone, Debug)]
pub struct Hot {
    pub rate: u32,
    pub frames: u64,
    /// Hot spans, in master frames, sorted and disjoint.
    pub spans: Vec<(u64, u64)>,
    /// Each hot block's first frame and sample peak, in order.
    pub blocks: Vec<(u64, f32)>,
}

/// Reads `master` once and finds where its sample peak comes within
/// [`NEAR_DB`] of `ceiling_dbtp`.
pub fn hot_spans(
    master: &Path,
    limits: &DecodeLimits,
    ceiling_dbtp: f64,
) -> Result<Hot, WorkerError> {
    let mut src = DecodeSource::open(master, limits)?;
    let rate = src.rate();
    let near = db_to_lin(ceiling_dbtp - NEAR_DB) as f32;
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let mut blocks: Vec<(u64, f32)> = Vec::new();
    let mut pos = 0u64;
    let pass = pipeline::for_each_block(&mut src, BLOCK, |block| {
        let n = block.first().map_or(0, Vec::len);
        for from in (0..n).step_by(HOT_BLOCK) {
            let to = (from + HOT_BLOCK).min(n);
            let peak = block
                .iter()
                .flat_map(|c| &c[from..to])
                .fold(0f32, |m, v| m.max(v.abs()));
            if peak > near {
                let (s, e) = (pos + from as u64, pos + to as u64);
                blocks.push((s, peak));
                match spans.last_mut() {
                    Some(last) if last.1 == s => last.1 = e,
                    _ => spans.push((s, e)),
                }
            }
        }
        pos += n as u64;
        Ok(())
    });
    pass.map_err(|e| src.error(e))?;
    Ok(Hot {
        rate,
        frames: pos,
        spans,
        blocks,
    })
}

/// Whether `codec`'s encode of a region reproduces the whole file's there.
/// AAC (FDK), MP3 (LAME) and Vorbis settle within the pre-roll: their
/// regions read the whole file's peak to 0.03 dB. Opus does not: its
/// encoder's analysis and VBR state carry seconds of history, and a region
/// started fresh is another realisation (64k, a region read 1.23 dBTP where
/// the whole file read 0.67; 0.87 and 1.01 with 0.3 and 3 s of pre-roll), so
/// Opus is always verified over the whole file.
pub fn settles(codec: Codec) -> bool {
    codec.format != Lossy::Opus
}

/// One stretch to encode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// Master frames at the start not measured (the pre-roll's first half).
    pub skip: u64,
    /// Ends before the master does: faded out.
    pub cut_end: bool,
}

impl Region {
    /// Cut from after the master's start: faded in, and measured from
    /// `skip`; a region from frame 0 starts as the whole-file encode does.
    fn fade_in(&self) -> bool {
        self.start > 0
    }
}

/// Master frames between two frame boundaries of `codec` on a master at
/// `rate`, where both sides of any resampling are on a boundary too.
pub fn frame_grid(codec: Codec, rate: u32) -> u64 {
    let out_rate = encode_rate(codec.format, rate) as u64;
    let frame: u64 = match codec.format {
        Lossy::Aac => 1024,
        Lossy::Mp3 => 1152,
        Lossy::Opus => 960,
        Lossy::Vorbis => 2048,
    };
    let a = frame * rate as u64;
    lcm(a, out_rate) / out_rate
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

/// The regions `codec` encodes to verify `hot`: each hot span with its
/// rolls, its start on the frame grid, overlapping ones merged.
pub fn regions(hot: &Hot, codec: Codec) -> Vec<Region> {
    let grid = frame_grid(codec, hot.rate);
    let pre = (PRE_ROLL_S * hot.rate as f64) as u64;
    let post = (POST_ROLL_S * hot.rate as f64) as u64;
    let mut out: Vec<Region> = Vec::new();
    for &(s, e) in &hot.spans {
        let start = s.saturating_sub(pre) / grid * grid;
        let end = (e + post).min(hot.frames);
        let cut_end = end < hot.frames;
        match out.last_mut() {
            Some(last) if start <= last.end => (last.end, last.cut_end) = (end, cut_end),
            _ => out.push(Region {
                start,
                end,
                skip: if start == 0 { 0 } else { (s - start) / 2 },
                cut_end,
            }),
        }
    }
    out
}

/// A sample of `hot` to estimate what `codec` adds before a master is
/// rendered again: the master cut into `n` equal stretches, in each the
/// hottest block and the hot frames within `span` around it, with the
/// regions' rolls.
pub fn probe(hot: &Hot, codec: Codec, n: u64, span: u64) -> Vec<Region> {
    let stretch = hot.frames.div_ceil(n.max(1)).max(1);
    let mut around: Vec<(u64, u64)> = Vec::new();
    let push = |b: Option<(u64, f32)>, around: &mut Vec<(u64, u64)>| {
        if let Some((at, _)) = b {
            let s = at
                .saturating_sub(span / 2)
                .max(around.last().map_or(0, |l| l.1));
            let e = (at + span / 2 + HOT_BLOCK as u64).min(hot.frames);
            if s < e {
                around.push((s, e));
            }
        }
    };
    let mut best: Option<(u64, f32)> = None;
    for &(at, peak) in &hot.blocks {
        if best.is_some_and(|(b, _)| b / stretch != at / stretch) {
            push(best.take(), &mut around);
        }
        if best.is_none_or(|(_, p)| peak > p) {
            best = Some((at, peak));
        }
    }
    push(best, &mut around);
    let spans = around
        .iter()
        .flat_map(|&(s, e)| {
            hot.spans
                .iter()
                .filter(move |h| h.0 < e && h.1 > s)
                .map(move |h| (h.0.max(s), h.1.min(e)))
        })
        .collect();
    let sample = Hot {
        spans,
        blocks: Vec::new(),
        ..hot.clone()
    };
    regions(&sample, codec)
}

/// Frames of decode kept before a region's measured part, for the true-peak
/// meter's left context (more than it reads).
const CONTEXT: usize = 256;

/// Keeps in `kept` the last `n` frames of what it held and `p[..to]`.
fn keep_last(kept: &mut Vec<Vec<f32>>, p: &[&[f32]], to: usize, n: usize) {
    kept.resize_with(p.len(), Vec::new);
    for (k, c) in kept.iter_mut().zip(p) {
        k.extend_from_slice(&c[..to]);
        let extra = k.len().saturating_sub(n);
        k.drain(..extra);
    }
}

/// The share of the master `regions` cover.
pub fn coverage(regions: &[Region], frames: u64) -> f64 {
    let covered: u64 = regions.iter().map(|r| r.end - r.start).sum();
    covered as f64 / frames.max(1) as f64
}

/// Raised-cosine gain `k` frames into a `FADE`-frame fade.
fn ramp(k: u64) -> f32 {
    let x = (k as f64 + 0.5) / FADE as f64;
    (0.5 - 0.5 * (std::f64::consts::PI * x).cos()) as f32
}

/// The readings of every region's decode, and the master's loudness over
/// the same stretches (for the loudness shift).
struct Readings {
    ideal: f32,
    reference: f32,
    sample: f32,
    samples_over: u64,
    intersample_overs: u64,
    decoded: Option<BlockMeter>,
    master: BlockMeter,
}

/// Encodes `codec` over each of `regions` of `master` (one read of it),
/// decodes and measures each; the files go as soon as they are measured.
pub fn check(
    master: &Path,
    codec: Codec,
    regions: &[Region],
    levels: MasterLevels,
    dir: &Path,
    stem: &str,
    limits: &DecodeLimits,
) -> Result<CodecReport, WorkerError> {
    let cpu = thread_cpu();
    let mut src = DecodeSource::open(master, limits)?;
    let (rate, nch) = (src.rate(), src.channels());
    let mut pass = Pass {
        codec,
        regions,
        dir,
        stem,
        limits,
        rate,
        nch,
        next: 0,
        pos: 0,
        open: None,
        failed: None,
        readings: Readings {
            ideal: 0.0,
            reference: 0.0,
            sample: 0.0,
            samples_over: 0,
            intersample_overs: 0,
            decoded: None,
            master: BlockMeter::new(nch, rate),
        },
    };
    // No region near the ceiling: nothing to encode, nor to read.
    let read = match regions.is_empty() {
        true => Ok(0),
        false => pipeline::for_each_block(&mut src, BLOCK, |block| pass.feed(block)),
    };
    if let Err(e) = read {
        return Err(pass.failed.take().unwrap_or_else(|| src.error(e)));
    }
    if let Some((e, path, r)) = pass.open.take() {
        // A region that runs to the master's end.
        pass.close(e, path, r)?;
    }
    let frames = pass.pos;
    Ok(report(
        codec,
        pass.readings,
        levels,
        coverage(regions, frames),
        thread_cpu() - cpu,
    ))
}

/// The codec's report from the regions' readings: the loudness of the
/// decode is the master's plus the shift measured over the regions.
fn report(codec: Codec, r: Readings, levels: MasterLevels, fraction: f64, cpu: f64) -> CodecReport {
    let master_lufs = r.master.loudness().0;
    let decoded_lufs = r
        .decoded
        .as_ref()
        .map_or(f64::NEG_INFINITY, |m| m.loudness().0);
    let shift = level_difference(decoded_lufs, master_lufs);
    let tp = lin_to_db(r.ideal as f64);
    CodecReport {
        codec,
        true_peak_dbtp: tp,
        true_peak_bs1770_dbtp: lin_to_db(r.reference as f64),
        sample_peak_dbfs: lin_to_db(r.sample as f64),
        samples_over: r.samples_over,
        intersample_overs: r.intersample_overs,
        integrated_lufs: if levels.integrated_lufs.is_finite() {
            levels.integrated_lufs + shift
        } else {
            levels.integrated_lufs
        },
        loudness_shift_lu: shift,
        true_peak_added_db: level_difference(tp, levels.true_peak_dbtp),
        cpu_seconds: cpu,
        encoded_fraction: fraction,
        render: 1,
        probe: false,
    }
}

/// One read of the master feeding each region's encoder in turn.
struct Pass<'a> {
    codec: Codec,
    regions: &'a [Region],
    dir: &'a Path,
    stem: &'a str,
    limits: &'a DecodeLimits,
    rate: u32,
    nch: usize,
    /// The next region not yet finished, and the master frame at the block.
    next: usize,
    pos: u64,
    open: Option<(Box<dyn super::Encode>, PathBuf, Region)>,
    /// An encoder's error, kept typed across the pass's DspError.
    failed: Option<WorkerError>,
    readings: Readings,
}

impl Pass<'_> {
    fn feed(&mut self, block: &mut [Vec<f32>]) -> Result<(), DspError> {
        let n = block.first().map_or(0, Vec::len) as u64;
        let (from, to) = (self.pos, self.pos + n);
        while let Some(&r) = self.regions.get(self.next) {
            if r.start >= to {
                break;
            }
            let (a, b) = (r.start.max(from), r.end.min(to));
            if a < b {
                self.write(block, r, a - from, b - from)
                    .map_err(|e| self.fail(e))?;
            }
            if r.end > to {
                break;
            }
            if let Some((e, path, r)) = self.open.take() {
                self.close(e, path, r).map_err(|e| self.fail(e))?;
            }
            self.next += 1;
        }
        self.pos = to;
        Ok(())
    }

    fn fail(&mut self, e: WorkerError) -> DspError {
        let sink = loopmind_dsp::error::IoFault::other("codec region", &e);
        self.failed = Some(e);
        DspError::Sink(sink)
    }

    /// Frames `a..b` of `block` (region `r`'s), faded at a cut, to its encoder.
    fn write(&mut self, block: &[Vec<f32>], r: Region, a: u64, b: u64) -> Result<(), WorkerError> {
        if self.open.is_none() {
            let path = self.dir.join(format!(
                "{}.{}{}.r{}.{}",
                self.stem,
                self.codec.format.name(),
                self.codec.kbps,
                self.next,
                extension(self.codec.format.into())
            ));
            let e = encoder(self.codec, self.rate, self.nch, &path, &Default::default())
                .map_err(|e| super::check::codec_failure(&path, e))?;
            self.open = Some((e, path, r));
        }
        let at = self.pos + a; // master frame of block[a]
        let mut part: Vec<Vec<f32>> = block
            .iter()
            .map(|c| c[a as usize..b as usize].to_vec())
            .collect();
        for (i, f) in (at..at + (b - a)).enumerate() {
            let g = match (f - r.start, r.end - f) {
                (k, _) if r.fade_in() && k < FADE => ramp(k),
                (_, k) if r.cut_end && k <= FADE => ramp(k - 1),
                _ => 1.0,
            };
            if g != 1.0 {
                part.iter_mut().for_each(|c| c[i] *= g);
            }
        }
        // The master's own loudness over what is measured of the decode.
        let measured_from = (r.start + r.skip).max(at) - at;
        if measured_from < b - a {
            let m: Vec<&[f32]> = block
                .iter()
                .map(|c| &c[(a + measured_from) as usize..b as usize])
                .collect();
            self.readings.master.add(&m);
        }
        let slices: Vec<&[f32]> = part.iter().map(Vec::as_slice).collect();
        let (e, path, _) = self.open.as_mut().expect("opened above");
        e.write(&slices)
            .map_err(|err| super::check::codec_failure(path, err))
    }

    /// Finishes a region's encode, decodes and measures it, drops the file.
    fn close(
        &mut self,
        e: Box<dyn super::Encode>,
        path: PathBuf,
        r: Region,
    ) -> Result<(), WorkerError> {
        e.finish()
            .map_err(|err| super::check::codec_failure(&path, err))?;
        let out_rate = encode_rate(self.codec.format, self.rate) as u64;
        let mut skip = r.skip * out_rate / self.rate as u64;
        let mut tp: Option<TruePeakMeter> = None;
        // The skipped frames' last ones: the meter's left context.
        let mut before: Vec<Vec<f32>> = Vec::new();
        let readings = &mut self.readings;
        let decoded = decode(self.codec.format, &path, self.limits, |rate, p| {
            let n = p.first().map_or(0, |c| c.len()) as u64;
            let from = skip.min(n) as usize;
            skip -= from as u64;
            if tp.is_none() {
                keep_last(&mut before, p, from, CONTEXT);
            }
            if from == n as usize {
                return;
            }
            let part: Vec<&[f32]> = p.iter().map(|c| &c[from..]).collect();
            tp.get_or_insert_with(|| {
                let mut m = TruePeakMeter::new(part.len(), rate);
                let ctx: Vec<&[f32]> = before.iter().map(Vec::as_slice).collect();
                m.prime(&ctx);
                m
            })
            .add(&part);
            readings
                .decoded
                .get_or_insert_with(|| BlockMeter::new(part.len(), rate))
                .add(&part);
        });
        let _ = std::fs::remove_file(&path);
        decoded.map_err(|reason| {
            WorkerError::Internal(format!("{}: decoding it back: {reason}", path.display()))
        })?;
        if let Some(tp) = tp {
            let p = tp.finish_both();
            readings.ideal = readings.ideal.max(p.ideal);
            readings.reference = readings.reference.max(p.reference);
            readings.sample = readings.sample.max(p.sample);
            readings.samples_over += p.samples_over;
            readings.intersample_overs += p.intersample_overs;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(format: Lossy) -> Codec {
        Codec { format, kbps: 128 }
    }

    #[test]
    fn the_grid_lands_on_frames_on_both_sides_of_a_resampler() {
        assert_eq!(frame_grid(codec(Lossy::Aac), 44_100), 1024);
        assert_eq!(frame_grid(codec(Lossy::Mp3), 48_000), 1152);
        // 960 frames at 48 kHz are 882 at 44.1 kHz (and 147 is the
        // resampler's period).
        assert_eq!(frame_grid(codec(Lossy::Opus), 44_100), 882);
        assert_eq!(frame_grid(codec(Lossy::Aac), 96_000), 2048);
    }

    #[test]
    fn spans_get_their_rolls_on_the_grid_and_merge() {
        let hot = Hot {
            rate: 44_100,
            frames: 441_000,
            spans: vec![
                (0, 2048),
                (100_000, 101_024),
                (120_000, 130_000),
                (400_000, 441_000),
            ],
            blocks: Vec::new(),
        };
        let r = regions(&hot, codec(Lossy::Aac));
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!((r[0].start, r[0].skip), (0, 0));
        let (s, e) = (100_000 - 44_100, 130_000 + 11_025);
        assert_eq!(r[1].start, s / 1024 * 1024);
        assert_eq!(r[1].end, e);
        assert_eq!(r[1].skip, (100_000 - r[1].start) / 2);
        assert_eq!(r[2].end, 441_000);
        let covered = r.iter().map(|r| r.end - r.start).sum::<u64>();
        assert_eq!(coverage(&r, hot.frames), covered as f64 / 441_000.0);
    }
}
