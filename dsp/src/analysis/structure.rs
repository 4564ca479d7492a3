//! Structure at the song's own scale: fine boundaries (novelty peaks) merged
//! upward, and labels from what repeats.
//!
//! Merging: the boundary whose two sides are most alike goes first, until
//! every remaining one marks a real change. Alike is measured at the
//! boundary, over up to 12 s each side: the level's jump (a line fitted to
//! each side, read where they meet, so a crescendo is no jump), how far the
//! timbre shape moves, and large chroma moves. Short sections merge more
//! readily (the likeness needed shrinks with the square root of their length
//! against a phrase: 8 bars on a beat grid, at most 20 s; 16 s without), so what is left
//! holds whole phrases.
//!
//! Labels: sections are grouped by likeness over their whole length (chroma,
//! timbre, level); neighbours of one group join unless a clear change
//! divides them. The loudest group that repeats is the chorus; a quiet first
//! or last section that is not the chorus is the intro or outro (an outro is
//! often the intro again); the group most of the rest is in (one heard
//! before the first chorus preferred) is the verse; a one-off after a chorus
//! and quieter than it is a bridge; what remains is named by its group's
//! letter ("Part C"). A track whose sections all belong to one group is one
//! texture, and is one section.

use crate::analysis::beats::{BeatGrid, Onsets};
use crate::analysis::sections::{self, Features, Section};
use crate::analysis::texture::{Texture, TIMBRE_BANDS};
use crate::Audio;

/// Level jump, chroma distance (1 - cosine) and timbre distance (dB RMS)
/// that each alone make a boundary.
const JUMP_DB: f64 = 4.0;
const CHROMA_DIST: f64 = 0.3;
const TIMBRE_DB: f64 = 4.0;
/// How far each side of a boundary is looked at.
const WINDOW_S: f64 = 12.0;
/// A section's typical length without a beat grid, and in bars on one.
const TYPICAL_S: f64 = 16.0;
const TYPICAL_BARS: f64 = 8.0;
/// Neighbours of one group divided by a boundary weaker than this join.
const JOIN: f64 = 1.5;

/// Sections detected from the audio.
pub fn detect(audio: &Audio) -> Vec<Section> {
    let onsets = crate::analysis::beats::onsets(audio);
    detect_with(
        audio.seconds(),
        &sections::features(audio),
        crate::analysis::beats::grid(&onsets).as_ref(),
        Some(&onsets),
    )
}

/// Sections detected from already computed features; boundaries snap to
/// a beat of `grid` when there is one (chosen by the level's step, and the
/// onsets' where they are given).
pub fn detect_with(
    duration: f64,
    f: &Features,
    grid: Option<&BeatGrid>,
    onsets: Option<&Onsets>,
) -> Vec<Section> {
    if f.loudness.len() < 4 || duration < 2.0 * sections::MIN_SECTION_S {
        return vec![Section {
            label: "Track".into(),
            start: 0.0,
            end: duration,
        }];
    }
    let edges = merge(f, &sections::fine_edges(duration, f, grid, onsets), grid);
    label(f, &edges)
}

/// The label of a track that is one texture throughout.
pub const ONE_SECTION: &str = "One section";

/// Mean texture and level of the hops in `a..b` (silent hops have no texture).
#[derive(Clone, Debug)]
struct Stats {
    level_db: f64,
    chroma: [f64; 12],
    timbre: [f64; TIMBRE_BANDS],
    textured: usize,
}

fn stats(f: &Features, a: usize, b: usize) -> Stats {
    let (b, a) = (b.min(f.loudness.len()), a.min(b));
    let mut s = Stats {
        level_db: -70.0,
        chroma: [0.0; 12],
        timbre: [0.0; TIMBRE_BANDS],
        textured: 0,
    };
    if b <= a {
        return s;
    }
    let e: f64 = f.loudness[a..b]
        .iter()
        .map(|l| 10f64.powf(l.max(-70.0) / 10.0))
        .sum::<f64>()
        / (b - a) as f64;
    s.level_db = 10.0 * e.log10();
    for t in f.texture.get(a..b.min(f.texture.len())).unwrap_or(&[]) {
        if t.chroma.iter().all(|&c| c == 0.0) {
            continue;
        }
        add(&mut s, t);
    }
    if s.textured > 0 {
        let n = s.textured as f64;
        s.chroma.iter_mut().for_each(|c| *c /= n);
        s.timbre.iter_mut().for_each(|c| *c /= n);
    }
    s
}

fn add(s: &mut Stats, t: &Texture) {
    for (o, c) in s.chroma.iter_mut().zip(&t.chroma) {
        *o += *c as f64;
    }
    for (o, c) in s.timbre.iter_mut().zip(&t.timbre) {
        *o += *c as f64;
    }
    s.textured += 1;
}

/// Chroma distance (1 - cosine) and timbre distance (dB RMS); zero where
/// either side has no texture (silence differs by level alone).
fn texture_distance(x: &Stats, y: &Stats) -> (f64, f64) {
    if x.textured == 0 || y.textured == 0 {
        return (0.0, 0.0);
    }
    let dot: f64 = x.chroma.iter().zip(&y.chroma).map(|(a, b)| a * b).sum();
    let norm = |c: &[f64; 12]| c.iter().map(|v| v * v).sum::<f64>().sqrt();
    let cos = dot / (norm(&x.chroma) * norm(&y.chroma)).max(1e-12);
    let timbre = (x
        .timbre
        .iter()
        .zip(&y.timbre)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        / TIMBRE_BANDS as f64)
        .sqrt();
    ((1.0 - cos).max(0.0), timbre)
}

/// The level's step at hop `b`: a line fitted by least squares to each
/// side (`a..b` and `b..c`), each read at the boundary; their difference
/// (dB). A crescendo running through the boundary is no step.
fn jump(level: &[f64], a: usize, b: usize, c: usize) -> f64 {
    let c = c.min(level.len());
    if b <= a || c <= b {
        return 0.0;
    }
    // The line through (t, y) read at t = b - 0.5 (between the sides).
    let at_boundary = |lo: usize, hi: usize| {
        let n = (hi - lo) as f64;
        let t = |i: usize| i as f64 - (b as f64 - 0.5);
        let mt = (lo..hi).map(t).sum::<f64>() / n;
        let my = level[lo..hi].iter().map(|y| y.max(-70.0)).sum::<f64>() / n;
        let sxx: f64 = (lo..hi).map(|i| (t(i) - mt).powi(2)).sum();
        let sxy: f64 = (lo..hi)
            .map(|i| (t(i) - mt) * (level[i].max(-70.0) - my))
            .sum();
        // Fewer than three points give no trustworthy slope: their mean.
        let slope = if hi - lo >= 3 && sxx > 0.0 {
            sxy / sxx
        } else {
            0.0
        };
        my - slope * mt
    };
    (at_boundary(b, c) - at_boundary(a, b)).abs()
}

/// How different the two sides of boundary `b` are (1 = just a boundary),
/// looking at most [`WINDOW_S`] into each side of `a..b..c` (hops).
fn boundary_cost(f: &Features, a: usize, b: usize, c: usize) -> f64 {
    let w = (WINDOW_S / f.hop_s) as usize;
    let (lo, hi) = (a.max(b.saturating_sub(w)), c.min(b + w));
    let (x, y) = (stats(f, lo, b), stats(f, b, hi));
    let (chroma, timbre) = texture_distance(&x, &y);
    difference(jump(&f.loudness, lo, b, hi), chroma, timbre)
}

/// A level step, chroma and timbre distances as one measure: 1 where any
/// alone, or a few together, make a boundary.
fn difference(level_db: f64, chroma: f64, timbre_db: f64) -> f64 {
    ((level_db / JUMP_DB).powi(2)
        + (chroma / CHROMA_DIST).powi(2)
        + (timbre_db / TIMBRE_DB).powi(2))
    .sqrt()
}

/// The length a section typically has here, in seconds: 8 bars of the
/// grid, held to 8..20 s (a tracker that hears half the tempo would make
/// its "bars" twice as long as the song's, and merge real sections).
fn typical_s(grid: Option<&BeatGrid>) -> f64 {
    grid.map_or(TYPICAL_S, |g| TYPICAL_BARS * 4.0 * g.period)
        .clamp(8.0, 20.0)
}

/// Merges fine sections (`edges`: 0, boundaries..., duration, seconds)
/// upward; returns the edges kept.
pub fn merge(f: &Features, edges: &[f64], grid: Option<&BeatGrid>) -> Vec<f64> {
    let hop = |t: f64| (t / f.hop_s).round() as usize;
    let typical = typical_s(grid);
    let mut e = edges.to_vec();
    while e.len() > 2 {
        let (i, cost) = (1..e.len() - 1)
            .map(|i| {
                let shorter = (e[i] - e[i - 1]).min(e[i + 1] - e[i]);
                let scale = (shorter / typical).sqrt().min(1.0);
                (
                    i,
                    boundary_cost(f, hop(e[i - 1]), hop(e[i]), hop(e[i + 1])) * scale,
                )
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("an inner edge");
        if cost >= 1.0 {
            break;
        }
        e.remove(i);
    }
    e
}

/// Groups of sections alike over their whole length (index of each
/// section's group, groups numbered in order of first appearance).
fn groups(f: &Features, spans: &[(f64, f64)]) -> Vec<usize> {
    let hop = |t: f64| (t / f.hop_s).round() as usize;
    let st: Vec<Stats> = spans
        .iter()
        .map(|&(a, b)| stats(f, hop(a), hop(b)))
        .collect();
    let distance = |i: usize, j: usize| {
        let (c, t) = texture_distance(&st[i], &st[j]);
        difference(st[i].level_db - st[j].level_db, c, t)
    };
    // Each joins the group of the nearest earlier section within reach.
    let mut group = vec![0usize; spans.len()];
    let mut next = 0;
    for i in 0..spans.len() {
        let best = (0..i)
            .map(|j| (j, distance(i, j)))
            .filter(|(_, d)| *d < 1.0)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        group[i] = match best {
            Some((j, _)) => group[j],
            None => {
                next += 1;
                next - 1
            }
        };
    }
    group
}

/// Sections from merged edges: neighbours of one group joined, labelled
/// by what repeats (see the module's notes).
pub fn label(f: &Features, edges: &[f64]) -> Vec<Section> {
    let spans: Vec<(f64, f64)> = edges.windows(2).map(|w| (w[0], w[1])).collect();
    let group = groups(f, &spans);
    let (spans, group) = join_neighbours(f, spans, group);
    if spans.len() == 1 {
        return vec![Section {
            label: ONE_SECTION.into(),
            start: spans[0].0,
            end: spans[0].1,
        }];
    }
    let hop = |t: f64| (t / f.hop_s).round() as usize;
    let level: Vec<f64> = spans
        .iter()
        .map(|&(a, b)| stats(f, hop(a), hop(b)).level_db)
        .collect();
    let names = Roles::new(&group, &level).names();
    spans
        .iter()
        .zip(names)
        .map(|(&(start, end), label)| Section { label, start, end })
        .collect()
}

/// Neighbours of one group are one section, unless what divides them is
/// a clear change where they meet (a step inside one texture).
fn join_neighbours(
    f: &Features,
    mut spans: Vec<(f64, f64)>,
    mut group: Vec<usize>,
) -> (Vec<(f64, f64)>, Vec<usize>) {
    let hop = |t: f64| (t / f.hop_s).round() as usize;
    let mut i = 1;
    while i < spans.len() {
        let weak =
            || boundary_cost(f, hop(spans[i - 1].0), hop(spans[i].0), hop(spans[i].1)) < JOIN;
        if group[i] == group[i - 1] && weak() {
            spans[i - 1].1 = spans[i].1;
            spans.remove(i);
            group.remove(i);
        } else {
            i += 1;
        }
    }
    (spans, group)
}

/// The sections in group `g`.
fn members(group: &[usize], g: usize) -> Vec<usize> {
    (0..group.len()).filter(|&i| group[i] == g).collect()
}

/// A group's level: the mean of its sections' powers, in dB.
fn mean_level(group: &[usize], level: &[f64], g: usize) -> f64 {
    let m = members(group, g);
    10.0 * (m.iter().map(|&i| 10f64.powf(level[i] / 10.0)).sum::<f64>() / m.len() as f64).log10()
}

/// What each section is in the song, from its group and level (dB) alone.
struct Roles<'a> {
    group: &'a [usize],
    level: &'a [f64],
    n_groups: usize,
    /// The loudest group that repeats.
    chorus: Option<usize>,
    median: f64,
    /// The first section of the chorus (the count of sections if none).
    first_chorus: usize,
}

impl<'a> Roles<'a> {
    fn new(group: &'a [usize], level: &'a [f64]) -> Self {
        let n_groups = group.iter().max().map_or(0, |m| m + 1);
        let chorus = (0..n_groups)
            .filter(|&g| members(group, g).len() > 1)
            .max_by(|&a, &b| mean_level(group, level, a).total_cmp(&mean_level(group, level, b)));
        let mut sorted = level.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = group.len();
        Roles {
            group,
            level,
            n_groups,
            chorus,
            median: sorted[sorted.len() / 2],
            first_chorus: (0..n).find(|&i| Some(group[i]) == chorus).unwrap_or(n),
        }
    }

    /// Quiet ends that are not the chorus open and close the track, whatever
    /// they repeat (an outro often is the intro again).
    fn intro(&self, i: usize) -> bool {
        i == 0 && Some(self.group[i]) != self.chorus && self.level[i] <= self.median
    }

    fn outro(&self, i: usize) -> bool {
        i == self.group.len() - 1
            && Some(self.group[i]) != self.chorus
            && self.level[i] <= self.median
    }

    /// The verse: the group the rest is most often in, one heard before the
    /// first chorus preferred.
    fn verse(&self) -> Option<usize> {
        (0..self.n_groups)
            .filter(|&g| Some(g) != self.chorus)
            .map(|g| {
                let m: Vec<usize> = members(self.group, g)
                    .into_iter()
                    .filter(|&i| !self.intro(i) && !self.outro(i))
                    .collect();
                (
                    g,
                    m.len(),
                    m.first().is_some_and(|&i| i < self.first_chorus),
                )
            })
            .filter(|&(_, count, _)| count > 0)
            .max_by_key(|&(g, count, early)| (count, early, std::cmp::Reverse(g)))
            .map(|(g, _, _)| g)
    }

    /// Each section's label, in order; groups without a role get letters
    /// in order of first appearance.
    fn names(&self) -> Vec<String> {
        let verse = self.verse();
        let chorus_level = self
            .chorus
            .map_or(f64::INFINITY, |g| mean_level(self.group, self.level, g));
        let mut letters = 0u8;
        let mut letter = vec![None; self.n_groups];
        (0..self.group.len())
            .map(|i| {
                let g = self.group[i];
                let one_off = members(self.group, g).len() == 1;
                if Some(g) == self.chorus {
                    "Chorus".to_string()
                } else if self.intro(i) {
                    "Intro".to_string()
                } else if self.outro(i) {
                    "Outro".to_string()
                } else if Some(g) == verse {
                    "Verse".to_string()
                } else if one_off && i > self.first_chorus && self.level[i] < chorus_level - 1.0 {
                    "Bridge".to_string()
                } else {
                    let l = *letter[g].get_or_insert_with(|| {
                        letters += 1;
                        letters - 1
                    });
                    format!("Part {}", (b'A' + l % 26) as char)
                }
            })
            .collect()
    }
}
