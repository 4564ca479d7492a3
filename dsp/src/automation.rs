//! Parameter automation: one value per section, crossfaded with a raised
//! cosine centred on every boundary, so no parameter ever steps.

use std::borrow::Cow;

/// Length of the crossfade centred on each boundary.
pub const RAMP_S: f64 = 1.0;
/// Frames per control block: chain parameters other than gain are read once
/// per block. At 32 frames the EQ's steps showed as a 35% rise in a tone's
/// third difference mid-ramp; at 8 they are lost in the tone's own.
pub const BLOCK: usize = 8;

#[derive(Clone, Debug, PartialEq)]
pub struct Automation {
    /// Start of every section after the first, ascending.
    boundaries: Vec<f64>,
    /// Half the crossfade at each boundary: [`RAMP_S`] / 2, shortened where
    /// sections are shorter so neighbouring ramps never overlap.
    half: Vec<f64>,
    /// One value per section (boundaries.len() + 1).
    values: Vec<f64>,
}

impl Automation {
    /// `sections`: (start, value) in time order. Before the first section
    /// the first value holds; after the last, the last.
    pub fn new(sections: &[(f64, f64)]) -> Self {
        let values: Vec<f64> = if sections.is_empty() {
            vec![0.0]
        } else {
            sections.iter().map(|s| s.1).collect()
        };
        let boundaries: Vec<f64> = sections.iter().skip(1).map(|s| s.0).collect();
        let half = (0..boundaries.len())
            .map(|k| {
                let before = if k == 0 {
                    f64::INFINITY
                } else {
                    boundaries[k] - boundaries[k - 1]
                };
                let after = boundaries
                    .get(k + 1)
                    .map_or(f64::INFINITY, |b| b - boundaries[k]);
                (RAMP_S / 2.0).min(before / 2.0).min(after / 2.0).max(0.0)
            })
            .collect();
        Self {
            boundaries,
            half,
            values,
        }
    }

    /// One value throughout.
    pub fn constant(value: f64) -> Self {
        Self::new(&[(0.0, value)])
    }

    pub fn is_constant(&self) -> bool {
        self.values.iter().all(|v| *v == self.values[0])
    }

    /// The first section's value (the whole curve's when constant).
    pub fn first(&self) -> f64 {
        self.values[0]
    }

    /// The value at `t` seconds.
    pub fn at(&self, t: f64) -> f64 {
        // Index of the section `t` falls in, ignoring ramps.
        let k = self.boundaries.partition_point(|&b| b <= t);
        // The nearest boundary is k-1 (just passed) or k (ahead).
        for j in [k.wrapping_sub(1), k] {
            let (Some(&b), Some(&h)) = (self.boundaries.get(j), self.half.get(j)) else {
                continue;
            };
            if h > 0.0 && (t - b).abs() < h {
                let x = (t - (b - h)) / (2.0 * h);
                let s = 0.5 - 0.5 * (std::f64::consts::PI * x).cos();
                let (a, c) = (self.values[j], self.values[j + 1]);
                return a + (c - a) * s;
            }
        }
        self.values[k]
    }

    /// The value for control block `b` (at its middle): [`BLOCK`] frames each.
    pub fn at_block(&self, b: usize, rate: u32) -> f64 {
        self.at(block_time(b, rate))
    }

    /// A reader for times that mostly move forward: it remembers the steady
    /// stretch it is in, so reading there is a comparison, not a search
    /// (the chain reads every parameter once per 8 frames).
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor {
            a: Cow::Borrowed(self),
            steady: (f64::INFINITY, f64::NEG_INFINITY),
            value: 0.0,
        }
    }

    /// A cursor that owns the curve (for stages that keep it between blocks).
    pub fn into_cursor(self) -> Cursor<'static> {
        Cursor {
            a: Cow::Owned(self),
            steady: (f64::INFINITY, f64::NEG_INFINITY),
            value: 0.0,
        }
    }
}

/// The time a control block's value is read at: its middle.
fn block_time(b: usize, rate: u32) -> f64 {
    (b * BLOCK) as f64 / rate as f64 + BLOCK as f64 / (2.0 * rate as f64)
}

/// See [`Automation::cursor`].
pub struct Cursor<'a> {
    a: Cow<'a, Automation>,
    /// [from, to): where the value is `value` and no ramp runs.
    steady: (f64, f64),
    value: f64,
}

impl Cursor<'_> {
    pub fn at(&mut self, t: f64) -> f64 {
        if t >= self.steady.0 && t < self.steady.1 {
            return self.value;
        }
        let a: &Automation = &self.a;
        let k = a.boundaries.partition_point(|&b| b <= t);
        // Section k holds its value from the end of the ramp before it to
        // the start of the ramp after it.
        let from = k
            .checked_sub(1)
            .map_or(f64::NEG_INFINITY, |j| a.boundaries[j] + a.half[j]);
        let to = a
            .boundaries
            .get(k)
            .map_or(f64::INFINITY, |&b| b - a.half[k]);
        if t >= from && t < to {
            self.steady = (from, to);
            self.value = a.values[k];
            return self.value;
        }
        a.at(t)
    }

    pub fn at_block(&mut self, b: usize, rate: u32) -> f64 {
        self.at(block_time(b, rate))
    }

    /// The curve read.
    pub fn curve(&self) -> &Automation {
        &self.a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_reads_what_at_reads() {
        let a = Automation::new(&[(0.0, 0.0), (5.0, 1.0), (5.4, 0.0), (5.8, 1.0), (9.0, 2.0)]);
        let mut c = a.cursor();
        // Forward, as the chain reads, then back and forth.
        let times = (0..12_000)
            .map(|i| i as f64 * 1e-3)
            .chain([7.0, 5.2, 0.1, 9.6, 4.6, 5.01]);
        for t in times {
            assert_eq!(c.at(t), a.at(t), "at {t}");
        }
    }

    #[test]
    fn holds_each_value_and_ramps_smoothly() {
        let a = Automation::new(&[(0.0, 1.0), (10.0, 3.0), (20.0, 2.0)]);
        assert_eq!(a.at(5.0), 1.0);
        assert_eq!(a.at(15.0), 3.0);
        assert_eq!(a.at(25.0), 2.0);
        assert!((a.at(10.0) - 2.0).abs() < 1e-12, "midpoint of the ramp");
        assert_eq!(a.at(10.0 - RAMP_S / 2.0 - 1e-9), 1.0);
        // Largest step per millisecond: the raised cosine's slope bound.
        let bound = 2.0 * std::f64::consts::PI / 2.0 / RAMP_S * 1e-3 * 1.001;
        let worst = (0..30_000)
            .map(|i| (a.at((i + 1) as f64 * 1e-3) - a.at(i as f64 * 1e-3)).abs())
            .fold(0.0, f64::max);
        assert!(worst <= bound, "{worst} > {bound}");
    }

    #[test]
    fn short_sections_shorten_the_ramps_instead_of_jumping() {
        // Boundaries 0.4 s apart: ramps of 0.2 s each, continuous between.
        let a = Automation::new(&[(0.0, 0.0), (5.0, 1.0), (5.4, 0.0), (5.8, 1.0)]);
        let mut prev = a.at(4.0);
        for i in 1..4000 {
            let v = a.at(4.0 + i as f64 * 1e-3);
            assert!(
                (v - prev).abs() < 0.02,
                "jump at {}: {prev} -> {v}",
                4.0 + i as f64 * 1e-3
            );
            prev = v;
        }
        assert!((a.at(5.2) - 1.0).abs() < 1e-12);
        assert!(a.at(5.6).abs() < 1e-12);
    }

    #[test]
    fn constant_curves_say_so() {
        assert!(Automation::new(&[(0.0, 2.0), (4.0, 2.0)]).is_constant());
        assert!(!Automation::new(&[(0.0, 2.0), (4.0, 2.5)]).is_constant());
        assert_eq!(Automation::constant(1.5).at(100.0), 1.5);
        assert_eq!(Automation::new(&[]).at(1.0), 0.0);
    }
}
