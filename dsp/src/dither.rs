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

    #[inline]
    fn uniform(&mut self) -> f64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let v = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Quantises `x` to the PCM grid, returned as a float on that grid
    /// (exact in f32 for up to 24 bits).
    #[inline]
    pub fn quantise(&mut self, x: f32) -> f32 {
        let d = self.uniform() - self.uniform();
        // f64: at 24 bits the grid is finer than f32 resolves near full scale.
        let q = (x as f64 * self.scale + d)
            .round()
            .clamp(-self.scale, self.max);
        (q / self.scale) as f32
    }
}
