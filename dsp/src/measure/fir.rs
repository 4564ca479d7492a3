//! The FIR kernel behind the true-peak interpolators, written so the compiler
//! vectorises it (accumulate one tap across a block), with an AVX2+FMA build
//! picked at run time: the same binary runs on any x86-64.

/// `out[i] = sum_j h[j] * x[i + j]` for every `i` of `out`; `x` holds `out.len() + h.len() - 1` samples or more.
pub fn convolve(x: &[f32], h: &[f32], out: &mut [f32]) {
    assert!(x.len() + 1 >= out.len() + h.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is built for.
            return unsafe { convolve_avx2(x, h, out) };
        }
    }
    convolve_generic(x, h, out)
}

#[inline(always)]
fn convolve_generic(x: &[f32], h: &[f32], out: &mut [f32]) {
    // 16 outputs at a time held in registers while the taps stream past.
    const W: usize = 16;
    let n = out.len();
    let full = n / W * W;
    for i in (0..full).step_by(W) {
        let mut acc = [0f32; W];
        for (j, &c) in h.iter().enumerate() {
            let xs: &[f32; W] = x[i + j..i + j + W].try_into().expect("W samples");
            for k in 0..W {
                acc[k] += c * xs[k];
            }
        }
        out[i..i + W].copy_from_slice(&acc);
    }
    for (i, o) in out.iter_mut().enumerate().skip(full) {
        *o = h.iter().zip(&x[i..]).map(|(c, v)| c * v).sum();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn convolve_avx2(x: &[f32], h: &[f32], out: &mut [f32]) {
    convolve_generic(x, h, out)
}

/// `sum a[i] * b[i]` over the shorter of the two, in eight partial sums so
/// the compiler vectorises it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail = n / 8 * 8;
    let mut s: f32 = acc.iter().sum();
    for i in tail..n {
        s += a[i] * b[i];
    }
    s
}
