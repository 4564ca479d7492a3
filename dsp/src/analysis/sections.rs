//! A track's sections and intensity: from the user's arrangement and emotion
//! documents (validated against the track), or detected from the audio.
//!
//! Detection: features every 0.5 s (K-weighted loudness, the share of
//! energy in low, mid and high bands, chroma and timbre shape), a
//! self-similarity matrix of the level and bands, and Foote's checkerboard
//! novelty along its diagonal; fine boundaries are novelty peaks at least
//! [`MIN_SECTION_S`] apart, on the beat where there is a grid. They are
//! merged upward to the song's own scale and labelled by what repeats in
//! [`crate::analysis::structure`].

use crate::analysis::beats::{BeatGrid, Onsets};
use crate::biquad::{Coeffs, State};
use crate::{Audio, DspError};
use serde::{Deserialize, Serialize};

/// Shortest section detection reports.
pub const MIN_SECTION_S: f64 = 6.0;
/// Feature hop.
const HOP_S: f64 = 0.5;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub label: String,
    pub start: f64,
    pub end: f64,
}

/// One point of the emotion graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmotionPoint {
    pub time: f64,
    pub intensity: f64,
    #[serde(default)]
    pub emotion: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArrangementDoc {
    structure: Vec<SectionDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionDoc {
    section: String,
    start: f64,
    end: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmotionDoc {
    curve: Vec<EmotionPoint>,
}

fn doc_err(field: String, reason: String) -> DspError {
    DspError::Document { field, reason }
}

/// Times may overshoot the decoded length by this much (encoder padding,
/// rounding in the document).
pub const END_SLACK_S: f64 = 0.5;
/// Most sections an arrangement (or a settings file) may hold.
pub const MAX_SECTIONS: usize = 1000;
/// Most points an emotion graph may hold.
pub const MAX_POINTS: usize = 100_000;
/// Longest section label or emotion word, in bytes.
pub const MAX_LABEL: usize = 64;

/// A label or word that is present and of a sane length.
pub fn check_label(field: String, v: &str) -> Result<(), DspError> {
    if v.trim().is_empty() {
        return Err(doc_err(field, "empty label".into()));
    }
    if v.len() > MAX_LABEL || v.chars().any(char::is_control) {
        return Err(doc_err(
            field,
            format!("must be at most {MAX_LABEL} bytes of text without control characters"),
        ));
    }
    Ok(())
}

/// Parses and checks an arrangement (`{"structure": [{"section", "start",
/// "end"}, ...]}`) against a track of `duration` seconds: times inside the
/// track, each section ending after it starts, sections ordered and not
/// overlapping.
pub fn parse_arrangement(json: &str, duration: f64) -> Result<Vec<Section>, DspError> {
    let doc: ArrangementDoc =
        serde_json::from_str(json).map_err(|e| doc_err("structure".into(), e.to_string()))?;
    if doc.structure.is_empty() {
        return Err(doc_err("structure".into(), "no sections".into()));
    }
    if doc.structure.len() > MAX_SECTIONS {
        return Err(doc_err(
            "structure".into(),
            format!("{} sections; at most {MAX_SECTIONS}", doc.structure.len()),
        ));
    }
    let mut prev_end = 0.0;
    let mut out = Vec::new();
    for (i, s) in doc.structure.into_iter().enumerate() {
        let f = |k: &str| format!("structure[{i}].{k}");
        check_label(f("section"), &s.section)?;
        if !s.start.is_finite() || s.start < 0.0 {
            return Err(doc_err(
                f("start"),
                format!("{} is before the track starts", s.start),
            ));
        }
        // The end is clamped to the track: the start must leave it a span.
        if s.start >= duration {
            return Err(doc_err(
                f("start"),
                format!("{} is beyond the track's end at {duration:.2} s", s.start),
            ));
        }
        if !s.end.is_finite() || s.end <= s.start {
            return Err(doc_err(
                f("end"),
                format!("{} is not after start {}", s.end, s.start),
            ));
        }
        if s.end > duration + END_SLACK_S {
            return Err(doc_err(
                f("end"),
                format!("{} is beyond the track's end at {duration:.2} s", s.end),
            ));
        }
        if s.start < prev_end - 1e-6 {
            return Err(doc_err(
                f("start"),
                format!(
                    "{} overlaps the previous section, which ends at {prev_end}",
                    s.start
                ),
            ));
        }
        prev_end = s.end;
        out.push(Section {
            label: s.section,
            start: s.start,
            end: s.end.min(duration),
        });
    }
    Ok(out)
}

/// Parses and checks an emotion graph (`{"curve": [{"time", "intensity",
/// "emotion"}, ...]}`): times inside the track and increasing, intensity
/// within 0..1.
pub fn parse_emotion(json: &str, duration: f64) -> Result<Vec<EmotionPoint>, DspError> {
    let doc: EmotionDoc =
        serde_json::from_str(json).map_err(|e| doc_err("curve".into(), e.to_string()))?;
    if doc.curve.is_empty() {
        return Err(doc_err("curve".into(), "no points".into()));
    }
    if doc.curve.len() > MAX_POINTS {
        return Err(doc_err(
            "curve".into(),
            format!("{} points; at most {MAX_POINTS}", doc.curve.len()),
        ));
    }
    let mut prev = -1.0;
    for (i, p) in doc.curve.iter().enumerate() {
        let f = |k: &str| format!("curve[{i}].{k}");
        if !p.time.is_finite() || p.time < 0.0 || p.time > duration + END_SLACK_S {
            return Err(doc_err(
                f("time"),
                format!("{} is outside the track (0..{duration:.2} s)", p.time),
            ));
        }
        if p.time <= prev {
            return Err(doc_err(
                f("time"),
                format!("{} does not follow {prev}", p.time),
            ));
        }
        if !(0.0..=1.0).contains(&p.intensity) {
            return Err(doc_err(
                f("intensity"),
                format!("{} is outside 0..1", p.intensity),
            ));
        }
        if let Some(word) = &p.emotion {
            check_label(f("emotion"), word)?;
        }
        prev = p.time;
    }
    Ok(doc.curve)
}

/// The emotion graph's intensity at `t` (linear between points, held beyond).
pub fn intensity_at(curve: &[EmotionPoint], t: f64) -> f64 {
    // Times increase (checked on parsing): a binary search keeps a long
    // graph's cost logarithmic per lookup.
    match curve.partition_point(|p| p.time <= t) {
        i if i == curve.len() => curve.last().map_or(0.5, |p| p.intensity),
        0 => curve[0].intensity,
        i => {
            let (a, b) = (&curve[i - 1], &curve[i]);
            a.intensity + (b.intensity - a.intensity) * (t - a.time) / (b.time - a.time)
        }
    }
}

/// Per-hop features of a track.
pub struct Features {
    pub hop_s: f64,
    /// K-weighted loudness per hop (LUFS-like, 1 s window).
    pub loudness: Vec<f64>,
    /// Share of energy below 200 Hz, 200 Hz..3 kHz, above 3 kHz.
    pub bands: Vec<[f64; 3]>,
    /// K-weighted energy per 100 ms sub-block (all channels).
    pub k_blocks: Vec<f64>,
    /// Chroma and timbre shape per hop.
    pub texture: Vec<crate::analysis::texture::Texture>,
    pub rate: u32,
}

fn band_filters(rate: u32) -> [Coeffs; 2] {
    let fs = rate as f64;
    [
        Coeffs::lowpass(200.0, 0.707, fs),
        Coeffs::highpass(3000.0, 0.707, fs),
    ]
}

/// Features every [`HOP_S`] over a 1 s window.
pub fn features(audio: &Audio) -> Features {
    let mut stage = FeatureStage::new(audio.num_channels(), audio.rate);
    for c in audio.chunks(65_536) {
        stage.push(&c);
    }
    stage.finish()
}

/// [`features`] of a stream of blocks: one K-weighting pass, and the band
/// balance of the mono sum from two more filters.
pub struct FeatureStage {
    rate: u32,
    /// Frames per feature hop, and per 100 ms sub-block.
    hop: usize,
    sub: usize,
    k: crate::measure::bs1770::KPower,
    filters: [Coeffs; 2],
    lo: State,
    hi: State,
    /// The hop being summed: K-weighted energy, band energies, frames.
    hop_k: f64,
    hop_bands: [f64; 3],
    hop_filled: usize,
    k_hops: Vec<f64>,
    band_e: Vec<[f64; 3]>,
    sub_k: f64,
    sub_filled: usize,
    k_blocks: Vec<f64>,
    texture: crate::analysis::texture::TextureStage,
}

impl FeatureStage {
    pub fn new(channels: usize, rate: u32) -> Self {
        Self {
            rate,
            hop: ((rate as f64 * HOP_S) as usize).max(1),
            sub: crate::measure::bs1770::hop(rate),
            k: crate::measure::bs1770::KPower::new(channels, rate),
            filters: band_filters(rate),
            lo: State::default(),
            hi: State::default(),
            hop_k: 0.0,
            hop_bands: [0.0; 3],
            hop_filled: 0,
            k_hops: Vec::new(),
            band_e: Vec::new(),
            sub_k: 0.0,
            sub_filled: 0,
            k_blocks: Vec::new(),
            texture: crate::analysis::texture::TextureStage::new(
                rate,
                ((rate as f64 * HOP_S) as usize).max(1),
            ),
        }
    }

    pub fn push(&mut self, block: &[&[f32]]) {
        self.texture.push(block);
        let nch = block.len() as f32;
        let power = self.k.weigh(block);
        for (i, &p) in power.iter().enumerate() {
            // The model's power is f32 per frame; the features sum the same.
            let p = p as f32 as f64;
            let x = (block.iter().map(|c| c[i]).sum::<f32>() / nch) as f64;
            let (l, t) = (
                self.lo.tick(&self.filters[0], x),
                self.hi.tick(&self.filters[1], x),
            );
            let e = &mut self.hop_bands;
            e[0] += l * l;
            e[1] += t * t;
            e[2] += x * x;
            self.hop_k += p;
            self.hop_filled += 1;
            if self.hop_filled == self.hop {
                self.k_hops.push(std::mem::take(&mut self.hop_k));
                self.band_e.push(std::mem::take(&mut self.hop_bands));
                self.hop_filled = 0;
            }
            self.sub_k += p;
            self.sub_filled += 1;
            if self.sub_filled == self.sub {
                self.k_blocks.push(std::mem::take(&mut self.sub_k));
                self.sub_filled = 0;
            }
        }
    }

    /// The features of the whole hops.
    pub fn finish(self) -> Features {
        let (k, hop) = (&self.k_hops, self.hop);
        let n = k.len();
        // 1 s windows: this hop and the next.
        let loudness = (0..n)
            .map(|h| {
                let e = k[h] + k.get(h + 1).copied().unwrap_or(k[h]);
                -0.691 + 10.0 * (e / (2 * hop) as f64 + 1e-12).log10()
            })
            .collect();
        let bands = self
            .band_e
            .iter()
            .map(|e| {
                let t = e[2] + 1e-12;
                let (low, high) = ((e[0] / t).min(1.0), (e[1] / t).min(1.0));
                [low, (1.0 - low - high).max(0.0), high]
            })
            .collect();
        Features {
            hop_s: HOP_S,
            loudness,
            bands,
            k_blocks: self.k_blocks,
            texture: self.texture.finish(n),
            rate: self.rate,
        }
    }
}

impl Features {
    /// The whole track's integrated loudness (LUFS) and loudness range (LU).
    pub fn loudness(&self) -> (f64, f64) {
        let hop = crate::measure::bs1770::hop(self.rate);
        (
            crate::measure::bs1770::gated_loudness(&self.k_blocks, hop),
            crate::measure::bs1770::loudness_range(&self.k_blocks, hop),
        )
    }

    /// A span's integrated (gated) loudness from the K-weighted energy the
    /// features already hold.
    pub fn range_loudness(&self, start: f64, end: f64) -> f64 {
        crate::measure::bs1770::range_loudness(&self.k_blocks, self.rate, start, end)
    }
}

fn feature_vectors(f: &Features) -> Vec<[f64; 4]> {
    let raw: Vec<[f64; 4]> = f
        .loudness
        .iter()
        .zip(&f.bands)
        .map(|(l, b)| [l.max(-70.0) / 6.0, b[0] * 4.0, b[1] * 4.0, b[2] * 8.0])
        .collect();
    raw
}

/// Foote novelty: a checkerboard kernel of `half` hops slid along the
/// self-similarity diagonal.
fn novelty(v: &[[f64; 4]], half: usize) -> Vec<f64> {
    let n = v.len();
    let sim = |i: usize, j: usize| {
        let d: f64 = (0..4).map(|k| (v[i][k] - v[j][k]).powi(2)).sum();
        (-d).exp()
    };
    (0..n)
        .map(|c| {
            if c < 1 || c + 1 > n {
                return 0.0;
            }
            let mut s = 0.0;
            let lo = c.saturating_sub(half);
            let hi = (c + half).min(n);
            for i in lo..hi {
                for j in lo..hi {
                    let same_side = (i < c) == (j < c);
                    // Gaussian taper so the kernel favours its centre.
                    let w = {
                        let di = (i as f64 - c as f64 + 0.5) / half as f64;
                        let dj = (j as f64 - c as f64 + 0.5) / half as f64;
                        (-2.0 * (di * di + dj * dj)).exp()
                    };
                    s += if same_side { w } else { -w } * sim(i, j);
                }
            }
            s
        })
        .collect()
}

/// Section boundaries (seconds, excluding 0 and the end) and the novelty curve.
fn boundaries(f: &Features, duration: f64) -> Vec<f64> {
    let v = feature_vectors(f);
    let half = (4.0 / f.hop_s) as usize; // 4 s each side
    let nov = novelty(&v, half);
    let mean = nov.iter().sum::<f64>() / nov.len().max(1) as f64;
    let sd = (nov.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / nov.len().max(1) as f64).sqrt();
    let min_gap = (MIN_SECTION_S / f.hop_s) as usize;
    // Strongest peaks first, each keeping the others at least min_gap away.
    let mut peaks: Vec<usize> = (1..nov.len().saturating_sub(1))
        .filter(|&i| nov[i] >= nov[i - 1] && nov[i] >= nov[i + 1] && nov[i] > mean + 0.5 * sd)
        .collect();
    peaks.sort_by(|&a, &b| nov[b].total_cmp(&nov[a]));
    let mut chosen: Vec<usize> = Vec::new();
    for p in peaks {
        let t = p as f64 * f.hop_s;
        if t < MIN_SECTION_S || duration - t < MIN_SECTION_S {
            continue;
        }
        if chosen.iter().all(|&c| c.abs_diff(p) >= min_gap) {
            chosen.push(p);
        }
    }
    chosen.sort_unstable();
    chosen.into_iter().map(|p| p as f64 * f.hop_s).collect()
}

/// A detected section's character, for labels, emotion and planning.
#[derive(Clone, Debug)]
pub struct SectionStats {
    pub loudness: f64,
    pub brightness: f64,
}

fn stats(f: &Features, start: f64, end: f64) -> SectionStats {
    let (a, b) = (
        (start / f.hop_s) as usize,
        ((end / f.hop_s) as usize).min(f.loudness.len()),
    );
    let (a, b) = (
        a.min(b.saturating_sub(1)),
        b.max(a + 1).min(f.loudness.len()),
    );
    let e: f64 = f.loudness[a..b]
        .iter()
        .map(|l| 10f64.powf(l / 10.0))
        .sum::<f64>()
        / (b - a) as f64;
    let br = f.bands[a..b].iter().map(|x| x[2]).sum::<f64>() / (b - a) as f64;
    SectionStats {
        loudness: 10.0 * e.log10(),
        brightness: br,
    }
}

/// The fine level of the structure: 0, every novelty peak (on the beat
/// where there is a grid), and the end.
pub fn fine_edges(
    duration: f64,
    f: &Features,
    grid: Option<&BeatGrid>,
    onsets: Option<&Onsets>,
) -> Vec<f64> {
    let mut edges = vec![0.0];
    edges.extend(boundaries(f, duration));
    if let Some(g) = grid {
        for e in edges.iter_mut().skip(1) {
            *e = snap(*e, g, f, onsets, duration);
        }
        // Two boundaries on one beat, or one snapped onto the start, merge.
        edges.dedup_by(|b, a| *b - *a < 0.5 * MIN_SECTION_S);
    }
    edges.retain(|&e| e < duration - 0.5 * MIN_SECTION_S || e == 0.0);
    edges.push(duration);
    edges
}

/// What a dB of onset-strength step counts against a dB of level step
/// when a boundary's beat is chosen.
const ONSET_WEIGHT: f64 = 0.5;

/// How far before a beat its onset windows start (an onset frame is 23 ms).
const ONSET_LEAD_S: f64 = 0.06;

/// How far from a coarse boundary its beat is looked for.
const SNAP_S: f64 = 1.5;

/// The beat within [`SNAP_S`] of a coarse boundary `e` where the level (and,
/// given them, the onset strength) steps most between the two beats before
/// and the two after it (the feature grid is 0.5 s, and its 1 s windows put
/// a boundary up to about a second off).
fn snap(e: f64, g: &BeatGrid, f: &Features, onsets: Option<&Onsets>, duration: f64) -> f64 {
    // Two beats each side: a kick and a snare, and short enough that a
    // window straddling the boundary shows it (a bar's chord changes would).
    let bar = 2.0 * g.period;
    // Mean level in dB of the 100 ms blocks wholly inside [a, b): ungated
    // (gating would drop the quiet part of a window), and in dB so one loud
    // block cannot stand for a quiet window.
    let sub = crate::measure::bs1770::hop(f.rate) as f64 / f.rate as f64;
    let level = |a: f64, b: f64| {
        let i = (a.max(0.0) / sub).ceil() as usize;
        let j = ((b.min(duration) / sub).floor() as usize).min(f.k_blocks.len());
        let db: Vec<f64> = f.k_blocks[i.min(j)..j]
            .iter()
            .map(|e| 10.0 * e.max(1e-12).log10())
            .collect();
        db.iter().sum::<f64>() / db.len().max(1) as f64
    };
    // Mean onset strength in [a, b), in dB: instruments entering or
    // leaving at one level (drums under a crescendo's quiet start) show here.
    // A floor at a tenth of the track's mean: near silence has no ratio.
    let floor = onsets.map_or(0.0, |o| {
        0.1 * o.env.iter().sum::<f64>() / o.env.len().max(1) as f64 + 1e-9
    });
    let onset = |o: &Onsets, a: f64, b: f64| {
        let i = (a.max(0.0) / o.hop_s).ceil() as usize;
        let j = ((b / o.hop_s).floor() as usize).min(o.env.len());
        let v = &o.env[i.min(j)..j];
        10.0 * (v.iter().sum::<f64>() / v.len().max(1) as f64 + floor).log10()
    };
    let mut best = (g.nearest(e), f64::MIN);
    let mut b = g.nearest(e - SNAP_S);
    while b <= e + SNAP_S {
        if b > 0.0 && b < duration {
            let step = (level(b, b + bar) - level(b - bar, b)).abs()
                + onsets.map_or(0.0, |o| {
                    // An onset's frame starts up to a frame before it:
                    // the windows start a little early so a beat's own hit
                    // falls on its side.
                    let c = b - ONSET_LEAD_S;
                    ONSET_WEIGHT * (onset(o, c, c + bar) - onset(o, c - bar, c)).abs()
                });
            if step > best.1 {
                best = (b, step);
            }
        }
        b += g.period;
    }
    best.0
}

/// Intensity in 0..1 per section, from its loudness relative to the track's
/// range and its brightness; and an emotion word for it.
pub fn section_intensity(f: &Features, sections: &[Section]) -> Vec<(f64, String)> {
    let st: Vec<SectionStats> = sections.iter().map(|s| stats(f, s.start, s.end)).collect();
    let lo = st.iter().map(|s| s.loudness).fold(f64::INFINITY, f64::min);
    let hi = st
        .iter()
        .map(|s| s.loudness)
        .fold(f64::NEG_INFINITY, f64::max);
    let bmax = st.iter().map(|s| s.brightness).fold(1e-9, f64::max);
    st.iter()
        .map(|s| {
            let level = if hi - lo > 0.5 {
                (s.loudness - lo) / (hi - lo)
            } else {
                0.5
            };
            let x = (0.8 * level + 0.2 * s.brightness / bmax).clamp(0.0, 1.0);
            (x, emotion_word(x, s.brightness / bmax).to_string())
        })
        .collect()
}

/// An emotion word for an intensity (and how bright the section is).
pub fn emotion_word(intensity: f64, brightness: f64) -> &'static str {
    match intensity {
        x if x < 0.3 => "calm",
        x if x < 0.55 && brightness < 0.5 => "reflective",
        x if x < 0.8 => "uplifting",
        _ => "powerful",
    }
}
