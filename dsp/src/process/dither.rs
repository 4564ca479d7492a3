//! TPDF dither and quantisation to a PCM bit depth. Seeded, so a re-render
//! of the same job writes the same bits.

pub struct Dither {
    scale: f64,
    max: f64,
    state: u64,
}

impl Dither {
    pub fn new(bits: u16, seed: u64) -> Self {
        let scale = (1u64 << (bits - 1)) as f64;
        Self {
            scale,
            max: scale - 1.0,
            state: seed | 1,
        }
    }

    /// TPDF noise in (-1, 1) LSB: the difference of two 32-bit uniforms cut
    /// from one xorshift64* draw.
    #[inline]
    fn tpdf(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let v = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((v >> 32) as f64 - (v & 0xffff_ffff) as f64) * (1.0 / 4_294_967_296.0)
    }

    /// Quantises `x` to the PCM grid, returned as a float on that grid
    /// (exact in f32 for up to 24 bits).
    #[inline]
    pub fn quantise(&mut self, x: f32) -> f32 {
        // Round to nearest by the 1.5 * 2^52 trick (exact for |v| < 2^51):
        // `f64::round` is a libm call that cost 2% of a render.
        const MAGIC: f64 = 6_755_399_441_055_744.0;
        let d = self.tpdf();
        // f64: at 24 bits the grid is finer than f32 resolves near full scale.
        let v = x as f64 * self.scale + d;
        let q = ((v + MAGIC) - MAGIC).clamp(-self.scale, self.max);
        (q / self.scale) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_on_the_grid_unbiased_with_tpdf_error_power() {
        let mut d = Dither::new(16, 3);
        let lsb = 1.0 / 32_768.0;
        let x = 0.3 * lsb as f32 + 0.01;
        let n = 200_000;
        let (mut sum, mut sq) = (0f64, 0f64);
        for _ in 0..n {
            let y = d.quantise(x);
            let steps = y as f64 / lsb;
            assert_eq!(steps, steps.round(), "{y} is off the grid");
            let e = (y - x) as f64 / lsb;
            sum += e;
            sq += e * e;
        }
        // TPDF: no bias, and error power of 1/4 LSB^2 whatever the input.
        assert!((sum / n as f64).abs() < 0.01, "bias {}", sum / n as f64);
        assert!(
            (sq / n as f64 - 0.25).abs() < 0.01,
            "power {}",
            sq / n as f64
        );
        // Full scale clips to the largest code, never wraps.
        assert_eq!(d.quantise(1.5), 32_767.0 / 32_768.0);
        assert_eq!(d.quantise(-1.5), -1.0);
    }
}
