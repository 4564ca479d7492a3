use loopmind_dsp::*;
fn main() {
    for (f, ph) in [
        (11025.0, 0.785398),
        (0.45 * 44100.0, 0.3),
        (0.4 * 44100.0, 0.1),
        (1000.0, 0.0),
        (0.47 * 44100.0, 0.2),
    ] {
        let a = testsignals::sine(44100, 1.0, f, -6.0, ph);
        let env = truepeak::peak_envelope(&a);
        let mx = env[1000..40000].iter().cloned().fold(0f32, f32::max);
        println!(
            "f {f:.0}: true -6.000 env4x {:.3} tp16 {:.3} sample {:.3}",
            lin_to_db(mx as f64),
            {
                let mut b = a.clone();
                for c in &mut b.channels {
                    let n = c.len();
                    for i in 0..4000 {
                        let w = (i as f32 / 4000.0).powi(2);
                        c[i] *= w;
                        c[n - 1 - i] *= w;
                    }
                }
                truepeak::true_peak_dbtp(&b)
            },
            lin_to_db(a.channels[0].iter().fold(0f32, |m, v| m.max(v.abs())) as f64)
        );
    }
}
