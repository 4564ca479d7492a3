//! Stereo width on mid/side: side scaled by `width`, mid untouched.

use crate::automation::{Automation, Cursor, BLOCK};
use crate::Audio;

pub fn apply(audio: &mut Audio, width: f64) {
    apply_automated(audio, &Automation::constant(width));
}

/// With the width following `width` (read per control block).
pub fn apply_automated(audio: &mut Audio, width: &Automation) {
    let mut stage = WidthStage::new(width.clone(), audio.num_channels(), audio.rate);
    crate::stage::run_whole(&mut stage, audio);
}

/// Width as a stage, following an automation.
pub struct WidthStage {
    /// None: the identity (exactly 1.0 throughout, or not stereo), which
    /// skipping keeps bit-exact.
    width: Option<Cursor<'static>>,
    rate: u32,
    pos: usize,
}

impl WidthStage {
    pub fn new(width: Automation, channels: usize, rate: u32) -> Self {
        let identity = (width.is_constant() && width.first() == 1.0) || channels != 2;
        Self {
            width: (!identity).then(|| width.into_cursor()),
            rate,
            pos: 0,
        }
    }
}

impl crate::stage::Stage for WidthStage {
    fn process(&mut self, block: &mut [Vec<f32>]) {
        let frames = crate::stage::frames(block);
        let Some(width) = &mut self.width else {
            return;
        };
        debug_assert!(self.pos.is_multiple_of(BLOCK));
        let first = self.pos / BLOCK;
        let (l, r) = block.split_at_mut(1);
        for (b, (lb, rb)) in l[0]
            .chunks_mut(BLOCK)
            .zip(r[0].chunks_mut(BLOCK))
            .enumerate()
        {
            let w = width.at_block(first + b, self.rate) as f32;
            for (a, b) in lb.iter_mut().zip(rb.iter_mut()) {
                let m = 0.5 * (*a + *b);
                let s = 0.5 * (*a - *b) * w;
                *a = m + s;
                *b = m - s;
            }
        }
        self.pos += frames;
    }
}
