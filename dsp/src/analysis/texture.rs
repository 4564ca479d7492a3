//! What a stretch of music is made of, per feature hop: chroma (which pitch
//! classes sound) and a timbre shape (level per log-spaced band, relative to
//! the hop's own mean). Structure detection compares these to tell repeated
//! material from new, independently of how loud it is.

use crate::analysis::stft::{MidFrames, MidStft};

/// Bands of the timbre shape, log-spaced from [`TIMBRE_LO_HZ`].
pub const TIMBRE_BANDS: usize = 16;
const TIMBRE_LO_HZ: f64 = 60.0;
const TIMBRE_HI_HZ: f64 = 16_000.0;
/// Pitches counted in the chroma: the bass to the top of most melodies.
const CHROMA_HZ: (f64, f64) = (55.0, 5000.0);

/// One hop's texture.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Texture {
    /// Energy per pitch class (C = 0), summing to 1 (all zero in silence).
    pub chroma: [f32; 12],
    /// Band levels in dB minus their mean (all zero in silence).
    pub timbre: [f32; TIMBRE_BANDS],
}

/// Texture per hop of `hop` frames from a stream of blocks: spectra of
/// frames about 90 ms long, each added to the hop it starts in.
pub struct TextureStage {
    stft: MidStft,
    frames: MidFrames,
    hop: usize,
    /// Each FFT bin's pitch class and timbre band (None outside their ranges).
    bin_class: Vec<Option<u8>>,
    bin_band: Vec<Option<u8>>,
    started: usize,
    chroma: Vec<[f64; 12]>,
    bands: Vec<[f64; TIMBRE_BANDS]>,
}

impl TextureStage {
    pub fn new(rate: u32, hop: usize) -> Self {
        let n = ((rate as f64 * 0.09) as usize).next_power_of_two().max(512);
        let bin_hz = rate as f64 / n as f64;
        let hi = TIMBRE_HI_HZ.min(0.45 * rate as f64);
        let bins = n / 2 + 1;
        let bin_class = (0..bins)
            .map(|k| {
                let f = k as f64 * bin_hz;
                (CHROMA_HZ.0..CHROMA_HZ.1).contains(&f).then(|| {
                    let midi = 69.0 + 12.0 * (f / 440.0).log2();
                    (midi.round() as i64).rem_euclid(12) as u8
                })
            })
            .collect();
        let bin_band = (0..bins)
            .map(|k| {
                let f = k as f64 * bin_hz;
                (f >= TIMBRE_LO_HZ && f < hi).then(|| {
                    let x = (f / TIMBRE_LO_HZ).ln() / (TIMBRE_HI_HZ / TIMBRE_LO_HZ).ln();
                    ((x * TIMBRE_BANDS as f64) as usize).min(TIMBRE_BANDS - 1) as u8
                })
            })
            .collect();
        Self {
            stft: MidStft::new(n, n),
            frames: MidFrames::new(n, n),
            hop: hop.max(1),
            bin_class,
            bin_band,
            started: 0,
            chroma: Vec::new(),
            bands: Vec::new(),
        }
    }

    pub fn push(&mut self, block: &[&[f32]]) {
        let Self {
            stft,
            frames,
            hop,
            bin_class,
            bin_band,
            started,
            chroma,
            bands,
        } = self;
        frames.push(block, |frame| {
            let h = *started * stft.len() / *hop;
            *started += 1;
            if chroma.len() <= h {
                chroma.resize(h + 1, [0.0; 12]);
                bands.resize(h + 1, [0.0; TIMBRE_BANDS]);
            }
            stft.load(frame);
            for (k, c) in stft.spectrum().iter().enumerate() {
                let p = c.norm_sqr() as f64;
                if let Some(pc) = bin_class[k] {
                    chroma[h][pc as usize] += p;
                }
                if let Some(b) = bin_band[k] {
                    bands[h][b as usize] += p;
                }
            }
        });
    }

    /// The texture of `hops` hops (hops the frames did not reach are silent).
    pub fn finish(self, hops: usize) -> Vec<Texture> {
        (0..hops)
            .map(|h| {
                let mut t = Texture::default();
                let (Some(c), Some(b)) = (self.chroma.get(h), self.bands.get(h)) else {
                    return t;
                };
                // Chroma of magnitudes (power compresses one loud note over
                // the chord), as shares.
                let mag: Vec<f64> = c.iter().map(|p| p.sqrt()).collect();
                let sum: f64 = mag.iter().sum();
                // A hop with (almost) nothing in it has no texture.
                if sum <= 1e-6 {
                    return t;
                }
                for (o, m) in t.chroma.iter_mut().zip(&mag) {
                    *o = (m / sum) as f32;
                }
                // Empty bands (above a low rate's Nyquist) are left out of the mean.
                let db: Vec<Option<f64>> = b
                    .iter()
                    .map(|&e| (e > 0.0).then(|| 10.0 * (e + 1e-10).log10()))
                    .collect();
                let present: Vec<f64> = db.iter().flatten().copied().collect();
                let mean = present.iter().sum::<f64>() / present.len().max(1) as f64;
                for (o, d) in t.timbre.iter_mut().zip(&db) {
                    // A band 60 dB under the mean counts as that far, no further.
                    *o = d.map_or(0.0, |d| (d - mean).max(-60.0) as f32);
                }
                t
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsignals::sine;

    #[test]
    fn a_tone_lands_in_its_pitch_class_and_band() {
        // A4 (440 Hz) is pitch class 9.
        let a = sine(44_100, 3.0, 440.0, -20.0, 0.0);
        let mut s = TextureStage::new(44_100, 22_050);
        for c in a.chunks(10_000) {
            s.push(&c);
        }
        let t = s.finish(6);
        assert_eq!(t.len(), 6);
        let best = |t: &Texture| {
            (0..12)
                .max_by(|&i, &j| t.chroma[i].total_cmp(&t.chroma[j]))
                .unwrap()
        };
        assert_eq!(best(&t[2]), 9, "{:?}", t[2].chroma);
        assert!(t[2].chroma[9] > 0.5, "{:?}", t[2].chroma);
        let band = (0..TIMBRE_BANDS)
            .max_by(|&i, &j| t[2].timbre[i].total_cmp(&t[2].timbre[j]))
            .unwrap();
        // 440 Hz is log(440/60)/log(16000/60) = 36% of the way up.
        assert_eq!(band, 5, "{:?}", t[2].timbre);
    }
}
