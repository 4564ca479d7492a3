//! Stereo width on mid/side: side scaled by `width`, mid untouched.

use crate::automation::{Automation, BLOCK};
use crate::Audio;

pub fn apply(audio: &mut Audio, width: f64) {
    apply_automated(audio, &Automation::constant(width));
}

/// With the width following `width` (read per control block).
pub fn apply_automated(audio: &mut Audio, width: &Automation) {
    // Exactly 1.0 is the identity; skipping keeps it bit-exact.
    if (width.is_constant() && width.first() == 1.0) || audio.num_channels() != 2 {
        return;
    }
    let rate = audio.rate;
    let (l, r) = audio.channels.split_at_mut(1);
    let mut width = width.cursor();
    for (b, (lb, rb)) in l[0]
        .chunks_mut(BLOCK)
        .zip(r[0].chunks_mut(BLOCK))
        .enumerate()
    {
        let w = width.at_block(b, rate) as f32;
        for (a, b) in lb.iter_mut().zip(rb.iter_mut()) {
            let m = 0.5 * (*a + *b);
            let s = 0.5 * (*a - *b) * w;
            *a = m + s;
            *b = m - s;
        }
    }
}
