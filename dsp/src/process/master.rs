//! Landing a master on its target: a gain search over the limiter, measured on
//! exactly the dithered samples that will be written.
//!
//! Every pass renders gain -> limiter -> TPDF dither deterministically (seeded
//! dither), so the pass that is measured and the pass that is written produce
//! the same bits; a checksum proves it.

use crate::error::IoFault;
use crate::measure::loudness::Loudness;
use crate::measure::truepeak::TruePeakMeter;
use crate::process::limiter::{GainComputer, LimiterSettings};
use crate::store::FrameStore;
use crate::targets::Target;
use crate::{db_to_lin, lin_to_db, Audio, DspError};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};

/// Most loudness gain (target minus input loudness) LoopMind applies; more
/// would be boosting noise, and silence is never boosted.
pub const GAIN_CAP_DB: f64 = 24.0;
/// Extra drive into the limiter, beyond the loudness gain cap, that the search
/// may use before it calls a target unreachable.
const MAX_DRIVE_DB: f64 = 12.0;
/// What a master promises: integrated loudness within this of the target.
pub const LUFS_TOLERANCE: f64 = 0.1;
/// What the search aims for, leaving room for other meters' differences.
const SEARCH_TOLERANCE: f64 = 0.02;
/// How close the model search goes before a real pass checks it.
const MODEL_TOLERANCE: f64 = 0.005;
/// Headroom under the ceiling: the detector's worst miss (about 0.05 dB for
/// content up to 0.45 fs), and as much again for meters with short
/// interpolation filters, which read band-limited bright material up to
/// 0.05 dB above ideal reconstruction (scipy's default polyphase filter, for
/// one; a converter's may do the same).
const CEILING_MARGIN_DB: f64 = 0.1;
/// The most headroom a learnt detector miss adds (a render further over is
/// a different problem, and lowering the next target's ceiling by more would
/// only cost loudness).
const MAX_DETECTOR_MISS_DB: f64 = 0.5;
const CHUNK: usize = 16_384;
/// Largest mean a written channel may keep (about -74 dBFS).
const MAX_DC: f64 = 2e-4;

/// Pre-limiter audio at the target's rate, kept in a [`FrameStore`] with its
/// detector envelope and K-weighted power, shared by every target at that
/// rate; in memory only per-sub-block sums.
pub struct Prepared {
    pub rate: u32,
    pub channels: usize,
    pub frames: usize,
    /// Lanes: the channels, then the envelope, then the power.
    store: RefCell<Box<dyn FrameStore>>,
    /// Integrated loudness by the model.
    pub lufs: f64,
    /// Per 100 ms sub-block: what the model needs where the limiter is idle.
    blocks: Vec<Block>,
    /// How far (dB) the written true peak went over the limiter's own
    /// ceiling in the last render of this audio, beyond what
    /// [`CEILING_MARGIN_DB`] allows for: material that gets past the
    /// detector by more makes the next target start with that much more
    /// headroom instead of finding out again.
    detector_miss_db: Cell<f64>,
    /// Every model evaluation of this audio so far, for later searches.
    points: RefCell<Vec<ModelPoint>>,
    /// Model evaluations run (not answered from `points`).
    model_runs: Cell<u32>,
}

/// One run of the loudness model. The limiter's gain curve depends on the
/// gain and its ceiling only through their ratio (r = ceiling / (gain x
/// peak)), so a run at `c_db` = ceiling - gain answers exactly for any gain
/// at ceiling `gain_db + c_db`: gain only scales the result. Targets sharing
/// a ceiling share runs, and the others start from a close guess.
struct ModelPoint {
    c_db: f64,
    limiter: LimiterSettings,
    /// K-weighted energy per sub-block under the gain curve, at unity gain.
    subs: Vec<f64>,
    /// Sum of each channel under the gain curve, at unity gain.
    sums: Vec<f64>,
}

impl ModelPoint {
    /// Integrated loudness and each channel's mean at `gain_db`.
    fn eval(&self, gain_db: f64, frames: usize, hop: usize) -> (f64, Vec<f32>) {
        let gain = db_to_lin(gain_db) as f32 as f64;
        let subs: Vec<f64> = self.subs.iter().map(|v| v * gain * gain).collect();
        let dc = self
            .sums
            .iter()
            .map(|s| (s * gain / frames.max(1) as f64) as f32)
            .collect();
        (crate::measure::bs1770::gated_loudness(&subs, hop), dc)
    }
}

/// Sums over one loudness sub-block, so the model can step over it whole
/// when no gain reduction touches it.
struct Block {
    power: f64,
    channel_sums: Vec<f64>,
    env_max: f32,
}

impl Block {
    fn empty(channels: usize) -> Self {
        Self {
            power: 0.0,
            channel_sums: vec![0.0; channels],
            env_max: 0.0,
        }
    }
}

impl Prepared {
    /// Band-limits `audio` ([`crate::measure::truepeak::band_limit`]) and prepares it
    /// in memory (tests, examples).
    pub fn new(mut audio: Audio) -> Result<Self, DspError> {
        crate::measure::truepeak::band_limit(&mut audio);
        let mut stage = PrepareStage::new(
            audio.num_channels(),
            audio.rate,
            Box::new(crate::store::MemoryStore::new(audio.num_channels() + 2)),
        );
        stage.push(&audio.channels)?;
        stage.finish()
    }

    fn env_lane(&self) -> usize {
        self.channels
    }

    fn power_lane(&self) -> usize {
        self.channels + 1
    }

    /// Learns how far a render's true peak `tp` went past the detector.
    /// Only a render the limiter worked on says how well it detects. (A miss
    /// within the margin changes nothing: later targets keep their
    /// ceilings, and so share model runs.)
    fn learn_detector_miss(&self, m: &Measured, p: &RenderParams, tp: f64) {
        if m.limiter_gr_max_db > 0.01 {
            self.detector_miss_db.set(
                (tp - p.limit_dbtp - CEILING_MARGIN_DB + 0.01).clamp(0.0, MAX_DETECTOR_MISS_DB),
            );
        }
    }
}

/// Builds a [`Prepared`] from blocks of band-limited pre-limiter audio: the
/// detector envelope and the K-weighted power go to the store beside the
/// audio; the model's per-sub-block sums stay in memory.
pub struct PrepareStage {
    rate: u32,
    channels: usize,
    env: crate::measure::truepeak::EnvelopeStage,
    k: crate::measure::bs1770::KPower,
    store: Box<dyn FrameStore>,
    out: crate::measure::truepeak::Delayed,
    power: Vec<f32>,
    hop: usize,
    /// The sub-block being summed, and how many frames it has.
    acc: Block,
    filled: usize,
    blocks: Vec<Block>,
}

impl PrepareStage {
    pub fn new(channels: usize, rate: u32, store: Box<dyn FrameStore>) -> Self {
        Self {
            rate,
            channels,
            env: crate::measure::truepeak::EnvelopeStage::new(channels, rate),
            k: crate::measure::bs1770::KPower::new(channels, rate),
            store,
            out: Default::default(),
            power: Vec::new(),
            hop: crate::measure::bs1770::hop(rate),
            acc: Block::empty(channels),
            filled: 0,
            blocks: Vec::new(),
        }
    }

    pub fn push(&mut self, block: &[Vec<f32>]) -> Result<(), DspError> {
        self.env.push(block, &mut self.out);
        self.take_out()
    }

    pub fn finish(mut self) -> Result<Prepared, DspError> {
        self.env.finish(&mut self.out);
        self.take_out()?;
        if self.filled > 0 {
            let last = std::mem::replace(&mut self.acc, Block::empty(self.channels));
            self.blocks.push(last);
        }
        let frames = self.store.frames();
        // Whole sub-blocks only, as BS.1770 measures.
        let whole = frames / self.hop;
        let subs: Vec<f64> = self.blocks[..whole].iter().map(|b| b.power).collect();
        let lufs = crate::measure::bs1770::audible(crate::measure::bs1770::gated_loudness(
            &subs, self.hop,
        ))?;
        Ok(Prepared {
            rate: self.rate,
            channels: self.channels,
            frames,
            store: RefCell::new(self.store),
            lufs,
            blocks: self.blocks,
            detector_miss_db: Cell::new(0.0),
            points: RefCell::new(Vec::new()),
            model_runs: Cell::new(0),
        })
    }

    /// Weighs what the envelope let out, sums it per sub-block, stores it.
    fn take_out(&mut self) -> Result<(), DspError> {
        let n = self.out.env.len();
        if n == 0 {
            return Ok(());
        }
        let audio: Vec<&[f32]> = self.out.audio.iter().map(Vec::as_slice).collect();
        self.power.clear();
        self.k.add(&audio, &mut self.power);
        let mut i = 0;
        while i < n {
            let take = (self.hop - self.filled).min(n - i);
            let r = i..i + take;
            let a = &mut self.acc;
            a.power += self.power[r.clone()].iter().map(|&v| v as f64).sum::<f64>();
            for (s, c) in a.channel_sums.iter_mut().zip(&audio) {
                *s += c[r.clone()].iter().map(|&v| v as f64).sum::<f64>();
            }
            a.env_max = self.out.env[r].iter().fold(a.env_max, |m, &v| m.max(v));
            self.filled += take;
            i += take;
            if self.filled == self.hop {
                let full = std::mem::replace(&mut self.acc, Block::empty(self.channels));
                self.blocks.push(full);
                self.filled = 0;
            }
        }
        let mut lanes = audio;
        lanes.push(&self.out.env);
        lanes.push(&self.power);
        self.store.append(&lanes).map_err(DspError::Store)
    }
}

/// Where a master's samples go: a file being written, or nowhere.
pub trait MasterSink {
    /// Starts over: a later pass replaces what an earlier one wrote.
    fn restart(&mut self) -> Result<(), IoFault>;
    fn write(&mut self, chunk: &[&[f32]]) -> Result<(), IoFault>;
}

/// Discards samples (measurement only).
pub struct NullSink;

impl MasterSink for NullSink {
    fn restart(&mut self) -> Result<(), IoFault> {
        Ok(())
    }
    fn write(&mut self, _: &[&[f32]]) -> Result<(), IoFault> {
        Ok(())
    }
}

/// Keeps what is written in memory (tests, benchmarks).
pub struct MemorySink(pub Vec<Vec<f32>>);

impl MemorySink {
    pub fn new(channels: usize) -> Self {
        Self(vec![Vec::new(); channels])
    }
}

impl MasterSink for MemorySink {
    fn restart(&mut self) -> Result<(), IoFault> {
        self.0.iter_mut().for_each(Vec::clear);
        Ok(())
    }
    fn write(&mut self, chunk: &[&[f32]]) -> Result<(), IoFault> {
        for (d, s) in self.0.iter_mut().zip(chunk) {
            d.extend_from_slice(s);
        }
        Ok(())
    }
}

/// Everything that determines the written samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RenderParams {
    /// Gain from the prepared (working-level) audio into the limiter.
    pub gain_db: f64,
    /// The limiter's internal ceiling (at or under the target's).
    pub limit_dbtp: f64,
    pub limiter: LimiterSettings,
    pub bits: u16,
    pub seed: u64,
    /// Per-channel offset removed after limiting: gain reduction on lopsided
    /// waveforms (a kick's first half-cycle) leaves a small DC otherwise.
    #[serde(default)]
    pub dc: Vec<f32>,
}

/// Measurements of the written samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub loudness: Loudness,
    /// Near-ideal (16x) true peak.
    pub true_peak_dbtp: f64,
    /// True peak by BS.1770's reference interpolator (ebur128's reading).
    pub true_peak_bs1770_dbtp: f64,
    pub limiter_gr_max_db: f64,
    pub limiter_gr_mean_db: f64,
    /// Mean of each written channel (DC).
    pub dc: Vec<f64>,
    pub checksum: u64,
    /// K-weighted energy per 100 ms of the written samples.
    #[serde(default, skip_serializing)]
    pub block_energy: Vec<f64>,
}

#[derive(Clone, Debug)]
pub struct TargetMaster {
    pub params: RenderParams,
    pub measured: Measured,
    /// Real renders (each measured); the last is what was written.
    pub passes: u32,
    /// Evaluations of the loudness model by the gain search.
    pub model_passes: u32,
}

struct PassStats {
    dc: Vec<f64>,
    gr_max_db: f64,
    gr_mean_db: f64,
    checksum: u64,
}

use crate::hash::{FNV_OFFSET, FNV_PRIME};

/// The gain a frame with envelope `env` needs to stay under `ceil` after
/// `gain` (1 where it needs none; past the end the envelope reads 0).
#[inline]
fn required_gain(env: f32, gain: f32, ceil: f32) -> f32 {
    let pk = env * gain;
    if pk > ceil {
        ceil / pk
    } else {
        1.0
    }
}

/// The limiter's gains for the output frames whose lookahead takes `env`
/// (the envelope [`GainComputer::delay`] frames ahead of them; `gc` has
/// taken every frame before: see [`prime`]).
fn limiter_gains(gc: &mut GainComputer, gain: f32, ceil: f32, env: &[f32], out: &mut [f32]) {
    for (g, &e) in out.iter_mut().zip(env) {
        *g = gc.push(required_gain(e, gain, ceil));
    }
}

/// A gain computer that has taken the frames its first output looks ahead to.
fn prime(
    prep: &Prepared,
    store: &mut dyn FrameStore,
    p: &RenderParams,
    gain: f32,
    ceil: f32,
) -> Result<GainComputer, DspError> {
    let mut gc = GainComputer::new(&p.limiter, prep.rate);
    let mut env = vec![0f32; gc.delay()];
    store
        .read(prep.env_lane(), 0, &mut env)
        .map_err(DspError::Store)?;
    for e in env {
        gc.push(required_gain(e, gain, ceil));
    }
    Ok(gc)
}

/// Renders the master in chunks, handing each to `emit`.
fn run_pass(
    prep: &Prepared,
    p: &RenderParams,
    checksum: bool,
    mut emit: impl FnMut(&[&[f32]]),
) -> Result<PassStats, DspError> {
    let (nch, frames) = (prep.channels, prep.frames);
    let gain = db_to_lin(p.gain_db) as f32;
    let ceil = db_to_lin(p.limit_dbtp) as f32;
    let mut store = prep.store.borrow_mut();
    let store = &mut **store;
    let mut gc = prime(prep, store, p, gain, ceil)?;
    let d = gc.delay();
    let mut env = vec![0f32; CHUNK];
    let mut dither = channel_dithers(p, nch);
    let mut out: Vec<Vec<f32>> = vec![vec![0.0; CHUNK]; nch];
    let mut g = vec![0f32; CHUNK];
    let scale = (1u64 << (p.bits - 1)) as f32;
    let mut hash = FNV_OFFSET;
    let dc: Vec<f32> = (0..nch)
        .map(|c| p.dc.get(c).copied().unwrap_or(0.0))
        .collect();
    let mut sums = vec![0f64; nch];
    let mut gr = GainReduction::new();
    let mut i = 0;
    while i < frames {
        let len = CHUNK.min(frames - i);
        let g = &mut g[..len];
        let env = &mut env[..len];
        store
            .read(prep.env_lane(), i + d, env)
            .map_err(DspError::Store)?;
        limiter_gains(&mut gc, gain, ceil, env, g);
        gr.add(g);
        for (c, o) in out.iter_mut().enumerate() {
            store.read(c, i, &mut o[..len]).map_err(DspError::Store)?;
        }
        quantise(&mut out, &mut dither, g, gain, &dc, &mut sums);
        if checksum {
            hash = checksum_chunk(hash, &out, len, scale);
        }
        let slices: Vec<&[f32]> = out.iter().map(|c| &c[..len]).collect();
        emit(&slices);
        i += len;
    }
    Ok(PassStats {
        dc: sums.iter().map(|s| s / frames.max(1) as f64).collect(),
        gr_max_db: gr.max_db(),
        gr_mean_db: gr.mean_db(),
        checksum: hash,
    })
}

/// One TPDF dither per channel, seeded apart so the channels' noise is
/// independent, and from `p` alone so every pass dithers alike.
fn channel_dithers(p: &RenderParams, nch: usize) -> Vec<crate::process::dither::Dither> {
    (0..nch)
        .map(|c| {
            crate::process::dither::Dither::new(
                p.bits,
                p.seed.wrapping_add(c as u64 * 0x9E37_79B9_7F4A_7C15),
            )
        })
        .collect()
}

/// The limiter's gain reduction over a pass: the deepest, and the mean.
struct GainReduction {
    g_min: f32,
    /// Reduction (dB) summed over the frames sampled, and their count.
    sum_db: f64,
    count: u64,
}

impl GainReduction {
    fn new() -> Self {
        Self {
            g_min: 1.0,
            sum_db: 0.0,
            count: 0,
        }
    }

    /// Takes a chunk's gains; the mean samples every 8th frame (CHUNK is a
    /// multiple of 8, so the frames sampled do not depend on the chunking).
    fn add(&mut self, g: &[f32]) {
        for &v in g.iter().step_by(8) {
            self.count += 1;
            if v < 1.0 {
                self.sum_db -= lin_to_db(v as f64);
            }
        }
        self.g_min = g.iter().fold(self.g_min, |m, &v| m.min(v));
    }

    fn max_db(&self) -> f64 {
        -lin_to_db(self.g_min as f64)
    }

    fn mean_db(&self) -> f64 {
        if self.count > 0 {
            self.sum_db / self.count as f64
        } else {
            0.0
        }
    }
}

/// Applies the gain and the limiter's gains `g` to the first `g.len()`
/// frames of `out`, removes `dc`, and dithers onto the output grid, in
/// place; adds each channel's sum of the result to `sums` (per chunk, in
/// this order, so the measured DC is the same to the bit).
fn quantise(
    out: &mut [Vec<f32>],
    dither: &mut [crate::process::dither::Dither],
    g: &[f32],
    gain: f32,
    dc: &[f32],
    sums: &mut [f64],
) {
    let len = g.len();
    if let ([l, r], [ql, qr]) = (&mut out[..], &mut dither[..]) {
        // Stereo in lockstep: each dither's generator waits on its own
        // state, and the other channel's fills that wait.
        let (mut sl, mut sr) = (0f64, 0f64);
        for ((a, b), &g) in l[..len].iter_mut().zip(&mut r[..len]).zip(g.iter()) {
            let k = gain * g;
            *a = ql.quantise(*a * k - dc[0]);
            *b = qr.quantise(*b * k - dc[1]);
            sl += *a as f64;
            sr += *b as f64;
        }
        sums[0] += sl;
        sums[1] += sr;
    } else {
        for (c, o) in out.iter_mut().enumerate() {
            let (mut s, dc, q) = (0f64, dc[c], &mut dither[c]);
            for (o, &g) in o[..len].iter_mut().zip(g.iter()) {
                *o = q.quantise(*o * (gain * g) - dc);
                s += *o as f64;
            }
            sums[c] += s;
        }
    }
}

/// `hash` (FNV-1a) carried over the first `len` frames of `out`, frame by
/// frame, each sample as its integer on the output grid: what a file of
/// these samples holds, whatever the chunking.
fn checksum_chunk(mut hash: u64, out: &[Vec<f32>], len: usize, scale: f32) -> u64 {
    for k in 0..len {
        for ch in out {
            hash ^= (ch[k] * scale) as i32 as u32 as u64;
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    }
    hash
}

/// The loudness model's integrated loudness for `p`: the limiter's gain
/// curve applied to the K-weighted power (exact where the gain is constant;
/// within a few hundredths of a LU under heavy limiting).
fn model_integrated(prep: &Prepared, p: &RenderParams) -> Result<f64, DspError> {
    Ok(model(prep, p)?.0)
}

/// The model's integrated loudness and each channel's mean after limiting
/// (before dither, which has none), so the DC the limiter makes can be
/// removed before anything is written.
fn model(prep: &Prepared, p: &RenderParams) -> Result<(f64, Vec<f32>), DspError> {
    let (frames, hop) = (prep.frames, crate::measure::bs1770::hop(prep.rate));
    let c_db = p.limit_dbtp - p.gain_db;
    let known = prep
        .points
        .borrow()
        .iter()
        .find(|q| q.c_db == c_db && q.limiter == p.limiter)
        .map(|q| q.eval(p.gain_db, frames, hop));
    if let Some(v) = known {
        return Ok(v);
    }
    let point = model_run(prep, p)?;
    prep.model_runs.set(prep.model_runs.get() + 1);
    let v = point.eval(p.gain_db, frames, hop);
    prep.points.borrow_mut().push(point);
    Ok(v)
}

/// The model's gain curve over the whole track for `p`'s gain-to-ceiling
/// ratio.
fn model_run(prep: &Prepared, p: &RenderParams) -> Result<ModelPoint, DspError> {
    let (nch, frames) = (prep.channels, prep.frames);
    let hop = crate::measure::bs1770::hop(prep.rate);
    let gain = db_to_lin(p.gain_db) as f32;
    let ceil = db_to_lin(p.limit_dbtp) as f32;
    let mut store = prep.store.borrow_mut();
    let store = &mut **store;
    let mut gc = prime(prep, store, p, gain, ceil)?;
    let d = gc.delay();
    let (mut x, mut env) = (vec![0f32; hop], vec![0f32; hop]);
    let mut sums = vec![0f64; nch];
    let mut subs = Vec::with_capacity(frames / hop + 1);
    let mut g = vec![0f32; hop];
    let mut i = 0;
    while i < frames {
        let len = hop.min(frames - i);
        let b = i / hop;
        // A whole sub-block the limiter leaves alone (idle, and no frame
        // entering its lookahead meanwhile needs reduction: the lookahead,
        // at most 20 ms, reaches only into the next sub-block) is added from
        // its sums.
        let ahead = prep.blocks[b]
            .env_max
            .max(prep.blocks.get(b + 1).map_or(0.0, |x| x.env_max));
        if len == hop && gc.is_idle() && ahead * gain <= ceil {
            let blk = &prep.blocks[b];
            for (s, v) in sums.iter_mut().zip(&blk.channel_sums) {
                *s += v;
            }
            subs.push(blk.power);
            gc.skip_idle(hop);
            i += len;
            continue;
        }
        let g = &mut g[..len];
        let (x, env) = (&mut x[..len], &mut env[..len]);
        store
            .read(prep.env_lane(), i + d, env)
            .map_err(DspError::Store)?;
        limiter_gains(&mut gc, gain, ceil, env, g);
        for (c, s) in sums.iter_mut().enumerate() {
            store.read(c, i, x).map_err(DspError::Store)?;
            *s += crate::measure::fir::dot(g, x) as f64;
        }
        g.iter_mut().for_each(|v| *v *= *v);
        if len == hop {
            store
                .read(prep.power_lane(), i, x)
                .map_err(DspError::Store)?;
            subs.push(crate::measure::fir::dot(g, x) as f64);
        }
        i += len;
    }
    // Sums at unity gain: the curve is the point, the gain a scale.
    Ok(ModelPoint {
        c_db: p.limit_dbtp - p.gain_db,
        limiter: p.limiter.clone(),
        subs,
        sums,
    })
}

/// What earlier model runs say at `p`'s ceiling: (gain, loudness), one per
/// run, nearest to `want` first.
fn known_gains(prep: &Prepared, p: &RenderParams, want: f64) -> Vec<(f64, f64)> {
    let (frames, hop) = (prep.frames, crate::measure::bs1770::hop(prep.rate));
    let mut known: Vec<(f64, f64)> = prep
        .points
        .borrow()
        .iter()
        .filter(|q| q.limiter == p.limiter)
        .map(|q| {
            let gain = p.limit_dbtp - q.c_db;
            (gain, q.eval(gain, frames, hop).0)
        })
        .filter(|(_, l)| l.is_finite())
        .collect();
    known.sort_by(|a, b| (a.1 - want).abs().total_cmp(&(b.1 - want).abs()));
    known
}

/// Renders, measures and hands every chunk to `sink`.
pub fn measure_pass(
    prep: &Prepared,
    p: &RenderParams,
    sink: &mut dyn MasterSink,
) -> Result<Measured, DspError> {
    sink.restart().map_err(DspError::Sink)?;
    // One K-weighting pass gives integrated loudness, LRA and the per-section
    // energies; the true peaks (near-ideal and BS.1770's 4x) come from one
    // interpolation pass.
    let mut meter = crate::measure::bs1770::BlockMeter::new(prep.channels, prep.rate);
    let mut tp = TruePeakMeter::new(prep.channels, prep.rate);
    let mut err = None;
    let stats = run_pass(prep, p, true, |c| {
        if err.is_some() {
            return;
        }
        tp.add(c);
        meter.add(c);
        if let Err(e) = sink.write(c) {
            err = Some(DspError::Sink(e));
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    let peaks = tp.finish_both();
    let (integrated_lufs, lra_lu) = meter.loudness();
    let loudness = Loudness {
        integrated_lufs,
        lra_lu,
        sample_peak_dbfs: lin_to_db(peaks.sample as f64),
        true_peak_ebur128_dbtp: f64::NAN,
        short_term_lufs: Vec::new(),
    };
    Ok(Measured {
        loudness,
        true_peak_dbtp: lin_to_db(peaks.ideal as f64),
        true_peak_bs1770_dbtp: lin_to_db(peaks.reference as f64),
        limiter_gr_max_db: stats.gr_max_db,
        limiter_gr_mean_db: stats.gr_mean_db,
        dc: stats.dc,
        checksum: stats.checksum,
        block_energy: meter.finish(),
    })
}

/// Searches the gain that puts the model's loudness on `want` (secant method:
/// limiting makes loudness grow by less than 1 dB per dB of gain).
fn search_gain(
    prep: &Prepared,
    p: &mut RenderParams,
    want: f64,
    target: &Target,
    pre_gain_db: f64,
) -> Result<(), DspError> {
    // Earlier runs at this ceiling: one may already be the answer, and the
    // two nearest give the first step.
    let known = known_gains(prep, p, want);
    let mut last: Option<(f64, f64)> = None;
    let peak = prep.blocks.iter().fold(0f32, |m, b| m.max(b.env_max)) as f64;
    let unlimited = peak * db_to_lin(p.gain_db) <= db_to_lin(p.limit_dbtp);
    // (Where the first guess leaves the limiter idle it is exact already.)
    if let (Some(&(g0, l0)), false) = (known.first(), unlimited) {
        p.gain_db = g0;
        last = known
            .get(1)
            .copied()
            .filter(|_| (l0 - want).abs() > MODEL_TOLERANCE);
    }
    for _ in 1..=16 {
        if p.gain_db + pre_gain_db > GAIN_CAP_DB + MAX_DRIVE_DB {
            // Driving the limiter this hard is no longer mastering.
            return Err(DspError::Unreachable {
                target_lufs: target.lufs,
                ceiling_dbtp: target.ceiling_dbtp,
                reached_lufs: model_integrated(prep, p)?,
            });
        }
        let (lufs, dc) = model(prep, p)?;
        let err = want - lufs;
        if err.abs() <= MODEL_TOLERANCE {
            p.dc = dc;
            return Ok(());
        }
        let slope = match last {
            Some((g0, l0)) if (p.gain_db - g0).abs() > 1e-9 => {
                ((lufs - l0) / (p.gain_db - g0)).clamp(0.0, 1.5)
            }
            _ => 1.0,
        };
        if slope < 0.02 && err > 0.0 {
            if err <= SEARCH_TOLERANCE {
                // Flat out, but close enough: the real pass decides.
                p.dc = dc;
                return Ok(());
            }
            return Err(DspError::Unreachable {
                target_lufs: target.lufs,
                ceiling_dbtp: target.ceiling_dbtp,
                reached_lufs: lufs,
            });
        }
        last = Some((p.gain_db, lufs));
        p.gain_db += (err / slope.max(0.02)).clamp(-12.0, 12.0);
    }
    Err(DspError::Unreachable {
        target_lufs: target.lufs,
        ceiling_dbtp: target.ceiling_dbtp,
        reached_lufs: model_integrated(prep, p)?,
    })
}

/// Masters `prep` onto `target`, writing the final samples to `sink`, and
/// returns what the written samples measure. `pre_gain_db` is the gain
/// already applied to reach the working level, counted against [`GAIN_CAP_DB`].
pub fn master_target(
    prep: &Prepared,
    target: &Target,
    limiter: &LimiterSettings,
    pre_gain_db: f64,
    seed: u64,
    sink: &mut dyn MasterSink,
) -> Result<TargetMaster, DspError> {
    check_gain_cap(prep, target, pre_gain_db)?;
    let mut p = RenderParams {
        gain_db: target.lufs - prep.lufs,
        limit_dbtp: target.ceiling_dbtp - CEILING_MARGIN_DB - prep.detector_miss_db.get(),
        limiter: limiter.clone(),
        bits: target.bits,
        seed,
        dc: Vec::new(),
    };
    let mut passes = 0;
    let runs_before = prep.model_runs.get();
    // What the real meter reads minus what the model predicts, learnt per pass.
    let mut offset = 0.0;
    let mut best: Option<(f64, TargetMaster)> = None;
    let mut dc_residual = vec![0f32; prep.channels];
    for _ in 0..5 {
        match search_gain(prep, &mut p, target.lufs - offset, target, pre_gain_db) {
            Ok(()) => {}
            // Flat out near the top: a real pass already within the promise
            // is the answer.
            Err(_) if best.is_some() => break,
            Err(e) => return Err(e),
        }
        for (d, r) in p.dc.iter_mut().zip(&dc_residual) {
            *d += r;
        }
        let measured = measure_pass(prep, &p, sink)?;
        passes += 1;
        let v = Verdict::of(&measured, target);
        prep.learn_detector_miss(&measured, &p, v.tp);
        if !v.dc_ok {
            // The model's DC estimate missed by what was measured.
            for (r, m) in dc_residual.iter_mut().zip(&measured.dc) {
                *r += *m as f32;
            }
        }
        let result = TargetMaster {
            params: p.clone(),
            measured,
            passes,
            model_passes: prep.model_runs.get() - runs_before,
        };
        if v.done() {
            return Ok(result);
        }
        if v.keeps_promise() && best.as_ref().is_none_or(|(e, _)| v.err < *e) {
            best = Some((v.err, result));
        }
        offset = v.lufs - model_integrated(prep, &p)?;
        if !v.tp_ok {
            // The detector under-read this material: lower the limiter's
            // ceiling by what it missed.
            p.limit_dbtp -= v.tp - target.ceiling_dbtp + 0.005;
        }
    }
    match best {
        Some((_, r)) => write_again(prep, r, passes, sink),
        None => Err(DspError::Unreachable {
            target_lufs: target.lufs,
            ceiling_dbtp: target.ceiling_dbtp,
            reached_lufs: f64::NAN,
        }),
    }
}

/// Refuses a target that needs more loudness gain than [`GAIN_CAP_DB`]
/// before any pass is run.
fn check_gain_cap(prep: &Prepared, target: &Target, pre_gain_db: f64) -> Result<(), DspError> {
    let loudness_gain = target.lufs - (prep.lufs - pre_gain_db);
    if loudness_gain > GAIN_CAP_DB {
        return Err(DspError::GainCap {
            target_lufs: target.lufs,
            gain_db: loudness_gain,
            cap_db: GAIN_CAP_DB,
        });
    }
    Ok(())
}

/// How a measured pass compares with its target.
struct Verdict {
    lufs: f64,
    /// The higher of the two true-peak readings.
    tp: f64,
    /// Distance from the target's loudness (LU).
    err: f64,
    tp_ok: bool,
    dc_ok: bool,
}

impl Verdict {
    fn of(m: &Measured, target: &Target) -> Self {
        let lufs = m.loudness.integrated_lufs;
        let tp = m.true_peak_dbtp.max(m.true_peak_bs1770_dbtp);
        Self {
            lufs,
            tp,
            err: (lufs - target.lufs).abs(),
            tp_ok: tp <= target.ceiling_dbtp,
            dc_ok: m.dc.iter().all(|d| d.abs() <= MAX_DC),
        }
    }

    /// On target by the search's own tolerance: the answer.
    fn done(&self) -> bool {
        self.tp_ok && self.dc_ok && self.err <= SEARCH_TOLERANCE
    }

    /// Within what a master promises: kept in case no later pass is done.
    fn keeps_promise(&self) -> bool {
        self.tp_ok && self.dc_ok && self.err <= LUFS_TOLERANCE
    }
}

/// Close enough by the promise, though not by the search's own tolerance:
/// the sink holds the last pass, so write the best one again.
fn write_again(
    prep: &Prepared,
    best: TargetMaster,
    passes: u32,
    sink: &mut dyn MasterSink,
) -> Result<TargetMaster, DspError> {
    let again = measure_pass(prep, &best.params, sink)?;
    if again.checksum != best.measured.checksum {
        // Never ship a file whose report describes other samples.
        // (Reported as the sink's fault, as it always was: the worker
        // retries those.)
        return Err(DspError::Sink(IoFault::other(
            "re-render",
            "differs from the measured pass",
        )));
    }
    Ok(TargetMaster {
        passes: passes + 1,
        ..best
    })
}
