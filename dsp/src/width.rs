//! Stereo width on mid/side: side scaled by `width`, mid untouched.

use crate::Audio;

pub fn apply(audio: &mut Audio, width: f64) {
    // Exactly 1.0 is the identity; skipping keeps it bit-exact.
    if width == 1.0 || audio.num_channels() != 2 {
        return;
    }
    let w = width as f32;
    let (l, r) = audio.channels.split_at_mut(1);
    for (a, b) in l[0].iter_mut().zip(r[0].iter_mut()) {
        let m = 0.5 * (*a + *b);
        let s = 0.5 * (*a - *b) * w;
        *a = m + s;
        *b = m - s;
    }
}
