//! The section plan: sections + intensity + mode + two sliders -> each
//! section's loudness offset, and the smooth gain automation that renders it.
//!
//! A section's offset moves its loudness away from (Cinematic: wider
//! contrast) or towards (Radio Loud: narrower) the track's level; Transparent
//! keeps the input's contrast. `dynamics` (0 punchy .. 1 compressed) scales
//! the contrast further; `reactivity` (0..1) scales the whole plan: 0 gives
//! every section the same setting.

use crate::bs1770;
use crate::modes::Mode;
use crate::sections::Section;
use crate::Audio;
use serde::{Deserialize, Serialize};

/// Largest offset a section gets, either way.
pub const MAX_SECTION_GAIN_DB: f64 = 8.0;
/// Length of the raised-cosine crossfade centred on each boundary.
pub const RAMP_S: f64 = 1.0;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sliders {
    /// 0 punchy (more contrast) .. 1 compressed (less).
    pub dynamics: f64,
    /// 0 one static setting .. 1 the full per-section plan.
    pub reactivity: f64,
}

impl Default for Sliders {
    fn default() -> Self {
        Self {
            dynamics: 0.5,
            reactivity: 1.0,
        }
    }
}

/// One section of `master_settings.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionPlan {
    pub section: String,
    pub emotion: String,
    pub start: f64,
    pub end: f64,
    /// 0..1, from the emotion graph or the audio.
    pub intensity: f64,
    /// The section's loudness in the input (integrated over the section).
    pub input_lufs: f64,
    /// Gain applied to this section relative to the rest of the track.
    pub lufs_offset: f64,
    /// The loudness the plan gives the section at the chain's working level:
    /// its loudness after the chain plus the offset (the master adds one
    /// gain to all sections, so contrasts carry over).
    pub planned_lufs: f64,
}

/// How much a mode multiplies the sections' loudness contrast; `dynamics`
/// scales it for the shaping modes (0.5 neutral).
pub fn contrast_factor(mode: Mode, dynamics: f64) -> f64 {
    let base = match mode {
        Mode::Transparent => return 1.0,
        Mode::Cinematic => 1.35,
        Mode::RadioLoud => 0.6,
        Mode::LoFi => 0.85,
    };
    base * (1.25 - 0.5 * dynamics.clamp(0.0, 1.0))
}

/// The plan: `sections` with their intensity and emotion word, and their
/// loudness as the plan finds them (after the chain); `input_lufs` is filled
/// with the same and may be replaced by the caller with the raw input's.
pub fn plan(
    sections: &[Section],
    character: &[(f64, String)],
    input_lufs: &[f64],
    mode: Mode,
    sliders: Sliders,
) -> Vec<SectionPlan> {
    // The track's level as the sections' length-weighted mean power.
    let audible: Vec<(f64, f64)> = sections
        .iter()
        .zip(input_lufs)
        .filter(|(_, l)| l.is_finite())
        .map(|(s, l)| (s.end - s.start, *l))
        .collect();
    let total: f64 = audible.iter().map(|(d, _)| d).sum();
    let reference = if total > 0.0 {
        10.0 * (audible
            .iter()
            .map(|(d, l)| d * 10f64.powf(l / 10.0))
            .sum::<f64>()
            / total)
            .log10()
    } else {
        0.0
    };
    let k = contrast_factor(mode, sliders.dynamics) - 1.0;
    let r = sliders.reactivity.clamp(0.0, 1.0);
    sections
        .iter()
        .zip(character)
        .zip(input_lufs)
        .map(|((s, (intensity, emotion)), &l)| {
            let offset = if l.is_finite() {
                (r * k * (l - reference)).clamp(-MAX_SECTION_GAIN_DB, MAX_SECTION_GAIN_DB)
            } else {
                0.0
            };
            SectionPlan {
                section: s.label.clone(),
                emotion: emotion.clone(),
                start: s.start,
                end: s.end,
                intensity: *intensity,
                input_lufs: l,
                lufs_offset: offset,
                planned_lufs: l + offset,
            }
        })
        .collect()
}

/// Linear gain per frame: each section's offset, crossfaded over [`RAMP_S`]
/// around every boundary with a raised cosine (no step, no zipper).
pub fn gain_curve(plan: &[SectionPlan], rate: u32, frames: usize) -> Vec<f32> {
    let fs = rate as f64;
    let lin = |db: f64| 10f64.powf(db / 20.0);
    let mut g = vec![1f32; frames];
    let Some(first) = plan.first() else { return g };
    // Piecewise constant first (before the first section: its gain).
    let mut level = lin(first.lufs_offset);
    let mut idx = 0usize;
    for (i, v) in g.iter_mut().enumerate() {
        let t = i as f64 / fs;
        while idx + 1 < plan.len() && t >= plan[idx + 1].start {
            idx += 1;
            level = lin(plan[idx].lufs_offset);
        }
        *v = level as f32;
    }
    // Then a crossfade around each boundary, between the neighbours' levels.
    let half = (RAMP_S * fs / 2.0) as usize;
    for w in plan.windows(2) {
        let (a, b) = (lin(w[0].lufs_offset), lin(w[1].lufs_offset));
        if (a - b).abs() < 1e-12 {
            continue;
        }
        let c = (w[1].start * fs) as usize;
        let lo = c.saturating_sub(half);
        let hi = (c + half).min(frames);
        for (i, v) in g.iter_mut().enumerate().take(hi).skip(lo) {
            let x = (i - lo) as f64 / (2 * half) as f64;
            let s = 0.5 - 0.5 * (std::f64::consts::PI * x).cos();
            *v = (a + (b - a) * s) as f32;
        }
    }
    g
}

/// Applies the plan's automation in place; returns the gain curve.
pub fn apply(audio: &mut Audio, plan: &[SectionPlan]) -> Vec<f32> {
    let g = gain_curve(plan, audio.rate, audio.frames());
    for ch in &mut audio.channels {
        for (x, k) in ch.iter_mut().zip(&g) {
            *x *= k;
        }
    }
    g
}

/// Each section's integrated loudness (BS.1770 gating over its span) from
/// K-weighted power per frame.
pub fn section_loudness(power: &[f32], rate: u32, sections: &[Section]) -> Vec<f64> {
    let fs = rate as f64;
    sections
        .iter()
        .map(|s| {
            let a = ((s.start * fs) as usize).min(power.len());
            let b = ((s.end * fs) as usize).min(power.len());
            bs1770::integrated_from_power(&power[a..b], rate)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections() -> (Vec<Section>, Vec<(f64, String)>, Vec<f64>) {
        let s = |label: &str, a, b| Section {
            label: label.into(),
            start: a,
            end: b,
        };
        (
            vec![
                s("Intro", 0.0, 10.0),
                s("Chorus", 10.0, 30.0),
                s("Outro", 30.0, 40.0),
            ],
            vec![
                (0.2, "calm".into()),
                (0.9, "powerful".into()),
                (0.2, "calm".into()),
            ],
            vec![-24.0, -14.0, -22.0],
        )
    }

    fn contrast(p: &[SectionPlan]) -> f64 {
        let out: Vec<f64> = p.iter().map(|s| s.planned_lufs).collect();
        out.iter().cloned().fold(f64::MIN, f64::max) - out.iter().cloned().fold(f64::MAX, f64::min)
    }

    #[test]
    fn modes_shape_contrast_and_reactivity_zero_is_static() {
        let (s, c, l) = sections();
        let input = 10.0;
        let p = |m, sl| plan(&s, &c, &l, m, sl);
        let d = Sliders::default();
        assert!((contrast(&p(Mode::Transparent, d)) - input).abs() < 1e-9);
        assert!(p(Mode::Transparent, d).iter().all(|x| x.lufs_offset == 0.0));
        assert!((contrast(&p(Mode::Cinematic, d)) - input * 1.35).abs() < 1e-9);
        assert!((contrast(&p(Mode::RadioLoud, d)) - input * 0.6).abs() < 1e-9);
        let punchy = Sliders { dynamics: 0.0, ..d };
        assert!(contrast(&p(Mode::Cinematic, punchy)) > contrast(&p(Mode::Cinematic, d)));
        let still = Sliders {
            reactivity: 0.0,
            ..d
        };
        for m in Mode::ALL {
            let offsets: Vec<f64> = p(m, still).iter().map(|x| x.lufs_offset).collect();
            assert!(
                offsets.iter().all(|o| *o == offsets[0]),
                "{m:?}: {offsets:?}"
            );
        }
    }

    #[test]
    fn automation_is_smooth_through_boundaries() {
        let (s, c, l) = sections();
        let p = plan(&s, &c, &l, Mode::Cinematic, Sliders::default());
        let rate = 48_000;
        let g = gain_curve(&p, rate, 40 * rate as usize);
        // Worst step of a raised cosine over RAMP_S between the two levels.
        let lin = |db: f64| 10f64.powf(db / 20.0);
        let span = (lin(p[1].lufs_offset) - lin(p[0].lufs_offset))
            .abs()
            .max((lin(p[2].lufs_offset) - lin(p[1].lufs_offset)).abs());
        let bound = span * std::f64::consts::PI / 2.0 / (RAMP_S * rate as f64) * 1.01;
        let worst = g
            .windows(2)
            .map(|w| (w[1] - w[0]).abs() as f64)
            .fold(0.0, f64::max);
        assert!(worst <= bound, "step {worst} above {bound}");
        // Each section's own level away from its boundaries.
        assert!((g[5 * rate as usize] as f64 - lin(p[0].lufs_offset)).abs() < 1e-6);
        assert!((g[20 * rate as usize] as f64 - lin(p[1].lufs_offset)).abs() < 1e-6);
    }

    #[test]
    fn a_sine_through_a_boundary_does_not_click() {
        let (s, c, l) = sections();
        let p = plan(
            &s,
            &c,
            &l,
            Mode::Cinematic,
            Sliders {
                dynamics: 0.0,
                reactivity: 1.0,
            },
        );
        let rate = 48_000u32;
        let n = 40 * rate as usize;
        let x: Vec<f32> = (0..n)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / rate as f64).sin()) as f32
            })
            .collect();
        let mut a = Audio::new(rate, vec![x.clone()]).unwrap();
        apply(&mut a, &p);
        // A click is energy far above the tone: the third difference of a
        // 1 kHz sine is small and smooth; a gain step makes it jump.
        let d3 = |v: &[f32], i: usize| (v[i + 3] - 3.0 * v[i + 2] + 3.0 * v[i + 1] - v[i]).abs();
        let gmax = p
            .iter()
            .map(|q| 10f64.powf(q.lufs_offset / 20.0))
            .fold(0.0, f64::max) as f32;
        let steady = (0..4800).map(|i| d3(&x, i)).fold(0.0, f32::max) * gmax;
        let boundary = (10 * rate as usize - rate as usize..10 * rate as usize + rate as usize)
            .map(|i| d3(&a.channels[0], i))
            .fold(0.0, f32::max);
        assert!(
            boundary <= steady * 1.02,
            "boundary {boundary} vs steady {steady}"
        );
        // A hard step there would have been far above it.
        let mut stepped = x.clone();
        stepped[10 * rate as usize..]
            .iter_mut()
            .for_each(|v| *v *= gmax);
        let click = (10 * rate as usize - 8..10 * rate as usize + 8)
            .map(|i| d3(&stepped, i))
            .fold(0.0, f32::max);
        assert!(
            click > steady * 1.1,
            "the detector cannot see a step: {click} vs {steady}"
        );
    }
}
