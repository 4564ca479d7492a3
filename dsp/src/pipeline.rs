//! The render as passes over a [`Source`], each a chain of [`Stage`]s, so
//! memory does not grow with the track (only small per-second records do):
//!
//! 1. [`analyse`]: loudness, section features, onsets, input true peak (and
//!    the tonal balance's frame energies when a reference is matched).
//! 2. The caller plans (sections, intensity, settings) from that record.
//! 3. [`process`]: the chain and the band limit, into a scratch store, with
//!    each section's loudness after the chain (the plan's loudness needs it).
//! 4. [`prepare`] per output rate: the plan's gain (and resampling), the
//!    detector envelope and the model's power, into a second store.
//! 5. [`crate::process::master::master_target`] per target: the gain search and the
//!    measured render, read from that store, written to the caller's sink.

use crate::analysis::beats::{OnsetStage, Onsets};
use crate::analysis::reference::{Balance, BalanceEnergies, BalanceSpectrum};
use crate::analysis::sections::{FeatureStage, Features, Section};
use crate::audio::{check_finite, check_format, check_length};
use crate::measure::truepeak::TruePeakMeter;
use crate::planning::plan::{GainStage, SectionMeter, SectionPlan};
use crate::process::chain::ChainSettings;
use crate::process::master::{PrepareStage, Prepared};
use crate::stage::{frames, Stage};
use crate::store::{FrameStore, Scratch};
use crate::{Audio, DspError};

/// Frames per block unless a caller asks otherwise: big enough that per-block
/// work is lost in the per-sample work, small enough to stay in cache.
pub const BLOCK: usize = 8192;

/// A mix the pipeline reads through from the start, once per pass.
pub trait Source {
    fn rate(&self) -> u32;
    fn channels(&self) -> usize;
    /// Starts a read-through from the first frame.
    fn rewind(&mut self) -> Result<(), DspError>;
    /// Appends the next frames to `out` (one `Vec` per channel); false at the end.
    fn read(&mut self, out: &mut [Vec<f32>]) -> Result<bool, DspError>;
}

/// A buffer in memory as a [`Source`] (tests, examples), read `chunk`
/// frames at a time.
pub struct AudioSource<'a> {
    audio: &'a Audio,
    chunk: usize,
    pos: usize,
}

impl<'a> AudioSource<'a> {
    pub fn new(audio: &'a Audio, chunk: usize) -> Self {
        Self {
            audio,
            chunk: chunk.max(1),
            pos: 0,
        }
    }
}

impl Source for AudioSource<'_> {
    fn rate(&self) -> u32 {
        self.audio.rate
    }
    fn channels(&self) -> usize {
        self.audio.num_channels()
    }
    fn rewind(&mut self) -> Result<(), DspError> {
        self.pos = 0;
        Ok(())
    }
    fn read(&mut self, out: &mut [Vec<f32>]) -> Result<bool, DspError> {
        let end = (self.pos + self.chunk).min(self.audio.frames());
        for (o, c) in out.iter_mut().zip(&self.audio.channels) {
            o.extend_from_slice(&c[self.pos..end]);
        }
        self.pos = end;
        Ok(end < self.audio.frames())
    }
}

/// Reads `src` through in blocks of exactly `block` frames (the last may be
/// shorter), whatever sizes the source hands out; returns the frames read.
pub fn for_each_block(
    src: &mut dyn Source,
    block: usize,
    mut f: impl FnMut(&mut [Vec<f32>]) -> Result<(), DspError>,
) -> Result<u64, DspError> {
    assert!(block > 0 && block.is_multiple_of(crate::automation::BLOCK));
    src.rewind()?;
    let nch = src.channels();
    let mut pending: Vec<Vec<f32>> = vec![Vec::new(); nch];
    let mut blk: Vec<Vec<f32>> = vec![Vec::with_capacity(block); nch];
    let mut total = 0u64;
    loop {
        let more = src.read(&mut pending)?;
        let have = pending.first().map_or(0, Vec::len);
        let mut used = 0;
        while have - used >= block || (!more && have > used) {
            let n = block.min(have - used);
            for (b, p) in blk.iter_mut().zip(&pending) {
                b.clear();
                b.extend_from_slice(&p[used..used + n]);
            }
            f(&mut blk)?;
            used += n;
            total += n as u64;
        }
        pending.iter_mut().for_each(|p| {
            p.drain(..used);
        });
        if !more {
            return Ok(total);
        }
    }
}

/// A read-through that checks what mastering needs of its input as it
/// streams: a rate and layout LoopMind masters (before a frame is read),
/// every sample finite, at least one loudness block. `f` sees each block as
/// planar slices; returns the frames read.
pub fn for_each_checked_block(
    src: &mut dyn Source,
    block: usize,
    mut f: impl FnMut(&[&[f32]]),
) -> Result<u64, DspError> {
    let rate = src.rate();
    check_format(rate, src.channels())?;
    let mut pos = 0u64;
    let frames = for_each_block(src, block, |b| {
        check_finite(b, pos, rate)?;
        pos += frames(b) as u64;
        f(&planar(b));
        Ok(())
    })?;
    check_length(frames, rate)?;
    Ok(frames)
}

fn planar(block: &[Vec<f32>]) -> Vec<&[f32]> {
    block.iter().map(Vec::as_slice).collect()
}

/// What the first pass learns of a mix: small records, whatever its length.
pub struct Analysis {
    pub rate: u32,
    pub channels: usize,
    pub frames: u64,
    pub features: Features,
    pub onsets: Onsets,
    pub true_peak_dbtp: f64,
    pub sample_peak: f32,
    /// The tonal balance's frame energies, when asked for.
    pub balance_energies: Option<Vec<f64>>,
}

impl Analysis {
    pub fn seconds(&self) -> f64 {
        self.frames as f64 / self.rate as f64
    }
}

/// Pass 1: checks the mix as it streams (format, every sample finite, long
/// enough) and measures what planning needs.
pub fn analyse(src: &mut dyn Source, balance: bool, block: usize) -> Result<Analysis, DspError> {
    let (rate, nch) = (src.rate(), src.channels());
    let mut features = FeatureStage::new(nch, rate);
    let mut onsets = OnsetStage::new(rate);
    let mut tp = TruePeakMeter::new(nch, rate);
    let mut energies = balance.then(|| BalanceEnergies::new(rate));
    let frames = for_each_checked_block(src, block, |p| {
        features.push(p);
        onsets.push(p);
        tp.add(p);
        if let Some(e) = &mut energies {
            e.push(p);
        }
    })?;
    let peaks = tp.finish_both();
    Ok(Analysis {
        rate,
        channels: nch,
        frames,
        features: features.finish(),
        onsets: onsets.finish(),
        true_peak_dbtp: crate::lin_to_db(peaks.ideal as f64),
        sample_peak: peaks.sample,
        balance_energies: energies.map(BalanceEnergies::finish),
    })
}

/// A track's tonal balance from its frame energies (a second read-through).
pub fn balance(
    src: &mut dyn Source,
    energies: Vec<f64>,
    block: usize,
) -> Result<Balance, DspError> {
    let mut spectrum = BalanceSpectrum::new(src.rate(), energies);
    for_each_block(src, block, |b| {
        spectrum.push(&planar(b));
        Ok(())
    })?;
    Ok(spectrum.finish())
}

/// The chain's output, in a scratch store, with what the plan needs of it.
pub struct Processed {
    pub rate: u32,
    pub channels: usize,
    pub frames: usize,
    store: Box<dyn FrameStore>,
    /// Each section's loudness after the chain.
    pub section_lufs: Vec<f64>,
    /// The raw mix between the clip's times (the A/B preview's "before").
    pub clip: Audio,
}

/// Pass 2: the chain (working level, EQ, compressor, saturation, width) and
/// the band limit, stored; each section's loudness after them; and the raw
/// mix's preview clip `clip` (seconds).
#[allow(clippy::too_many_arguments)]
pub fn process(
    src: &mut dyn Source,
    chain: &ChainSettings,
    input_lufs: f64,
    plan: &[SectionPlan],
    sections: &[Section],
    clip: (f64, f64),
    scratch: &mut dyn Scratch,
    block: usize,
) -> Result<Processed, DspError> {
    let (rate, nch) = (src.rate(), src.channels());
    let mut stage = chain.stage(
        input_lufs,
        crate::planning::plan::chain_curves(chain, plan),
        rate,
        nch,
    );
    let mut band = crate::measure::truepeak::band_limiter(rate, nch);
    let mut k = crate::measure::bs1770::KPower::new(nch, rate);
    let mut meter = SectionMeter::new(sections, rate);
    let mut store = scratch.create(nch, "processed").map_err(DspError::Store)?;
    let (ca, cb) = (
        (clip.0 * rate as f64) as usize,
        (clip.1 * rate as f64) as usize,
    );
    let mut clip_audio = vec![Vec::new(); nch];
    let mut pos = 0usize;
    let frames = for_each_block(src, block, |b| {
        let n = frames(b);
        let (lo, hi) = (ca.max(pos), cb.min(pos + n));
        if hi > lo {
            for (c, x) in clip_audio.iter_mut().zip(b.iter()) {
                c.extend_from_slice(&x[lo - pos..hi - pos]);
            }
        }
        stage.process(b);
        band.process(b);
        meter.add(k.weigh(&planar(b)));
        store.append(&planar(b)).map_err(DspError::Store)?;
        pos += n;
        Ok(())
    })?;
    if clip_audio[0].is_empty() {
        // A clip past the end (it is chosen from the sections): the start.
        clip_audio.iter_mut().for_each(|c| c.push(0.0));
    }
    Ok(Processed {
        rate,
        channels: nch,
        frames: frames as usize,
        store,
        section_lufs: meter.finish(),
        clip: Audio::new(rate, clip_audio)?,
    })
}

/// Pass 3, per output rate: the plan's loudness offsets (ramped across
/// boundaries), resampling to `rate` (and the band limit again after it),
/// then the limiter's detector envelope and the model's K-weighted power.
pub fn prepare(
    processed: &mut Processed,
    plan: &[SectionPlan],
    rate: u32,
    scratch: &mut dyn Scratch,
    block: usize,
) -> Result<Prepared, DspError> {
    let nch = processed.channels;
    let store = scratch
        .create(nch + 2, &format!("prepared-{rate}"))
        .map_err(DspError::Store)?;
    let mut out = PrepareStage::new(nch, rate, store);
    let mut gain = GainStage::new(plan, processed.rate);
    let mut resampler = if rate != processed.rate {
        Some((
            crate::process::resample::ResampleStage::new(processed.rate, rate, nch)?,
            crate::measure::truepeak::band_limiter(rate, nch),
            vec![Vec::new(); nch],
        ))
    } else {
        None
    };
    let mut b: Vec<Vec<f32>> = vec![Vec::new(); nch];
    let mut pos = 0;
    while pos < processed.frames {
        let n = block.min(processed.frames - pos);
        for (c, x) in b.iter_mut().enumerate() {
            x.resize(n, 0.0);
            processed.store.read(c, pos, x).map_err(DspError::Store)?;
        }
        gain.process(&mut b);
        match &mut resampler {
            None => out.push(&b)?,
            Some((r, band, o)) => {
                o.iter_mut().for_each(Vec::clear);
                r.push(&b, o)?;
                band.process(o);
                out.push(o)?;
            }
        }
        pos += n;
    }
    if let Some((r, band, o)) = &mut resampler {
        o.iter_mut().for_each(Vec::clear);
        r.finish(o)?;
        band.process(o);
        out.push(o)?;
    }
    out.finish()
}
