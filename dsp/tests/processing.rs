//! The chain's stages against their analytic behaviour, and the limiter
//! against signals built to get past it.

use loopmind_dsp::biquad::{run_cascade, Coeffs};
use loopmind_dsp::measure::{loudness, truepeak};
use loopmind_dsp::process::compressor::CompressorSettings;
use loopmind_dsp::process::limiter::LimiterSettings;
use loopmind_dsp::process::master::{master_target, MemorySink, Prepared};
use loopmind_dsp::process::width;
use loopmind_dsp::targets::Target;
use loopmind_dsp::testsignals::sine;
use loopmind_dsp::{lin_to_db, Audio};

/// Differentiated white noise: energy rising to Nyquist.
fn bright_noise(seed: u64, n: usize, gain: f64) -> Vec<f32> {
    let mut noise = loopmind_dsp::testsignals::Noise::new(seed);
    let mut prev = 0.0;
    (0..n)
        .map(|_| {
            let v = noise.sample();
            let y = gain * (v - prev);
            prev = v;
            y as f32
        })
        .collect()
}

fn ebur128_true_peak(a: &Audio) -> f64 {
    let mut m =
        ebur128::EbuR128::new(a.num_channels() as u32, a.rate, ebur128::Mode::TRUE_PEAK).unwrap();
    let ch: Vec<&[f32]> = a.channels.iter().map(|c| c.as_slice()).collect();
    m.add_frames_planar_f32(&ch).unwrap();
    let tp = (0..a.num_channels() as u32)
        .map(|c| m.true_peak(c).unwrap())
        .fold(0.0, f64::max);
    lin_to_db(tp)
}

fn master_and_check(name: &str, a: Audio, lufs: f64, ceiling: f64) {
    let t = Target {
        name: name.into(),
        lufs,
        ceiling_dbtp: ceiling,
        rate: None,
        bits: 24,
        codecs: Vec::new(),
    };
    let prep = Prepared::new(a).unwrap();
    let mut cap = MemorySink::new(prep.channels);
    let m = master_target(&prep, &t, &LimiterSettings::default(), 0.0, 7, &mut cap).unwrap();
    let out = Audio::new(prep.rate, cap.0).unwrap();
    let ours = truepeak::true_peak_dbtp(&out);
    let theirs = ebur128_true_peak(&out);
    let l = loudness::measure(&out).unwrap().integrated_lufs;
    assert!(
        ours <= ceiling,
        "{name}: 16x true peak {ours} over {ceiling}"
    );
    assert!(
        theirs <= ceiling,
        "{name}: ebur128 true peak {theirs} over {ceiling}"
    );
    assert!((l - lufs).abs() <= 0.1, "{name}: {l} LUFS, want {lufs}");
    assert!(
        (m.measured.true_peak_dbtp - ours).abs() < 1e-3,
        "{name}: reported peak is not what was written"
    );
    assert!(
        (m.measured.true_peak_bs1770_dbtp - theirs).abs() < 1e-3,
        "{name}: 4x reading {} is not ebur128's {theirs}",
        m.measured.true_peak_bs1770_dbtp
    );
}

#[test]
fn limiter_holds_the_ceiling_on_adversarial_signals() {
    let rate = 48_000;
    // Full-scale square wave at 1 kHz: band-unlimited edges ring far over 0 dBFS.
    let sq: Vec<f32> = (0..rate * 4)
        .map(|i| if (i / 24) % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    master_and_check(
        "square",
        Audio::new(rate as u32, vec![sq.clone(), sq]).unwrap(),
        -9.0,
        -1.0,
    );
    // fs/4 at 45 degrees: samples at -3 dB of the true peak.
    master_and_check(
        "fs4-45",
        sine(48_000, 4.0, 12_000.0, 0.0, std::f64::consts::FRAC_PI_4),
        -10.0,
        -1.0,
    );
    // Impulses over quiet noise.
    let mut n = loopmind_dsp::testsignals::Noise::new(3);
    let mut imp: Vec<f32> = (0..rate * 4).map(|_| 0.05 * n.sample() as f32).collect();
    for k in (1000..imp.len()).step_by(4801) {
        imp[k] = if k % 2 == 0 { 1.0 } else { -1.0 };
    }
    master_and_check(
        "impulses",
        Audio::new(rate as u32, vec![imp.clone(), imp]).unwrap(),
        -14.0,
        -2.0,
    );
}

#[test]
fn bright_material_lands_on_its_ceiling_in_one_render() {
    // Energy rising to Nyquist: before the limiter's input was band-limited,
    // the detector read such material up to 0.24 dB under the 16x meter and
    // every first render came out over its ceiling, to be rendered again.
    for rate in [44_100u32, 48_000] {
        // Bursts (hats, 20 ms every 250 ms) over a bed 20 dB down: the
        // limiter works on every burst.
        let n = rate as usize * 6;
        let bursts = |seed| {
            let mut x = bright_noise(seed, n, 0.3);
            for (i, v) in x.iter_mut().enumerate() {
                if i % (rate as usize / 4) > rate as usize / 50 {
                    *v *= 0.1;
                }
            }
            x
        };
        let a = Audio::new(rate, vec![bursts(1), bursts(2)]).unwrap();
        let t = Target {
            name: "loud".into(),
            lufs: -9.0,
            ceiling_dbtp: -1.0,
            rate: None,
            bits: 24,
            codecs: Vec::new(),
        };
        let prep = Prepared::new(a).unwrap();
        let render = |seed| {
            let limiter = LimiterSettings::default();
            master_target(&prep, &t, &limiter, 0.0, seed, &mut MemorySink::new(2)).unwrap()
        };
        let m = render(7);
        let tp = m.measured.true_peak_dbtp;
        assert_eq!(
            m.passes, 1,
            "{rate} Hz: {} renders, true peak {tp}",
            m.passes
        );
        assert!(
            m.measured.limiter_gr_max_db > 3.0,
            "{rate} Hz: the limiter worked: {} dB",
            m.measured.limiter_gr_max_db
        );
        assert!((-1.2..=-1.0).contains(&tp), "{rate} Hz: true peak {tp}");
        // A second target at the same ceiling is answered by the first's
        // model runs (the limiter's curve depends only on ceiling / gain).
        let again = render(8);
        assert_eq!((again.passes, again.model_passes), (1, 0), "{rate} Hz");
        let l = again.measured.loudness.integrated_lufs;
        assert!((l + 9.0).abs() <= 0.02, "{rate} Hz: {l} LUFS");
    }
}

#[test]
fn band_limit_is_flat_to_0_42_fs_and_removes_the_top() {
    for rate in [44_100u32, 48_000] {
        let fs = rate as f64;
        for (f, lo, hi) in [
            (0.1, -0.01, 0.01),
            (0.42, -0.02, 0.01),
            (0.49, -200.0, -40.0),
        ] {
            let mut a = sine(rate, 1.0, f * fs, -6.0, 0.0);
            let before = rms_db(&a.channels[0]);
            truepeak::band_limit(&mut a);
            let change = rms_db(&a.channels[0]) - before;
            assert!(
                (lo..=hi).contains(&change),
                "{rate} Hz, {f} fs: {change:.3} dB"
            );
        }
    }
}

/// Level of a steady sine after processing, measured away from the edges.
fn rms_db(x: &[f32]) -> f64 {
    let s = &x[x.len() / 2..];
    10.0 * (s.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / s.len() as f64).log10()
}

#[test]
fn eq_sections_match_their_analytic_response() {
    let fs = 48_000.0;
    let cases = [
        (Coeffs::low_shelf(100.0, 4.0, fs), 20.0, 4.0),
        (Coeffs::high_shelf(8000.0, -3.0, fs), 20_000.0, -3.0),
        (Coeffs::peaking(1000.0, 2.5, 0.7, fs), 1000.0, 2.5),
        (
            Coeffs::highpass(15.0, std::f64::consts::FRAC_1_SQRT_2, fs),
            15.0,
            -3.01,
        ),
    ];
    for (k, f, design_db) in cases {
        // The design: shelves reach their gain far from the corner, the bell
        // at its centre, the Butterworth high-pass is -3 dB at its corner.
        assert!(
            (k.magnitude_db(f, fs) - design_db).abs() < 0.15,
            "design at {f} Hz: {}",
            k.magnitude_db(f, fs)
        );
        // The implementation: a sine through the filter changes level by the
        // analytic response, at several frequencies.
        for probe in [50.0, 300.0, 1000.0, 5000.0, 12_000.0] {
            let a = sine(48_000, 1.0, probe, -6.0, 0.0);
            let mut x = a.channels[0].clone();
            run_cascade(&[k], &mut x);
            let got = rms_db(&x) - rms_db(&a.channels[0]);
            let want = k.magnitude_db(probe, fs);
            assert!(
                (got - want).abs() < 0.02,
                "{probe} Hz: got {got}, analytic {want}"
            );
        }
    }
}

#[test]
fn compressor_follows_its_static_curve() {
    let c = CompressorSettings {
        threshold_db: -20.0,
        ratio: 4.0,
        knee_db: 6.0,
        attack_ms: 5.0,
        release_ms: 50.0,
        makeup_db: 2.0,
    };
    // Below, inside and above the knee.
    for peak in [-30.0, -20.0, -6.0, -3.0] {
        let mut a = sine(48_000, 2.0, 1000.0, peak, 0.0);
        let input = rms_db(&a.channels[0]);
        c.apply(&mut a);
        let got = rms_db(&a.channels[0]) - input;
        // The detector reads RMS over channels: a sine's RMS is its level.
        let want = c.static_curve(input) - input + c.makeup_db;
        assert!(
            (got - want).abs() < 0.1,
            "sine at {peak} dBFS: gain {got}, curve says {want}"
        );
    }
    assert!((c.static_curve(-40.0) + 40.0).abs() < 1e-9);
    assert!((c.static_curve(0.0) - (-20.0 + 20.0 / 4.0)).abs() < 1e-9);
}

#[test]
fn width_one_is_the_identity_and_zero_is_mono() {
    let mut n = loopmind_dsp::testsignals::Noise::new(9);
    let l: Vec<f32> = (0..10_000).map(|_| n.sample() as f32 * 0.5).collect();
    let r: Vec<f32> = (0..10_000).map(|_| n.sample() as f32 * 0.5).collect();
    let a = Audio::new(48_000, vec![l, r]).unwrap();
    let mut b = a.clone();
    width::apply(&mut b, 1.0);
    assert_eq!(a, b);
    width::apply(&mut b, 0.0);
    assert!(b.channels[0]
        .iter()
        .zip(&b.channels[1])
        .all(|(x, y)| x == y));
    let mut c = a.clone();
    width::apply(&mut c, 1.5);
    assert_ne!(a, c);
}

#[test]
fn detector_never_reads_below_ebur128() {
    // Bright noise: where ebur128's short interpolator over-reads.
    let x = bright_noise(21, 96_000, 0.4);
    let a = Audio::new(48_000, vec![x.clone(), x]).unwrap();
    let env = truepeak::peak_envelope(&a).into_iter().fold(0f32, f32::max);
    let theirs = ebur128_true_peak(&a);
    let ours = lin_to_db(env as f64);
    assert!(
        ours >= theirs - 0.001,
        "detector {ours} dB under ebur128's {theirs} dB"
    );
}

#[test]
fn reference_reading_is_ebur128s() {
    // Bright noise, a near-Nyquist tone and a 45 degree fs/4 sine: where
    // interpolators disagree most.
    let bright = bright_noise(5, 50_000, 0.45);
    let signals = [
        Audio::new(44_100, vec![bright.clone(), bright]).unwrap(),
        sine(44_100, 1.0, 0.45 * 44_100.0, -3.0, 0.3),
        sine(48_000, 1.0, 12_000.0, -1.0, std::f64::consts::FRAC_PI_4),
        // ebur128 interpolates 2x at 96 kHz and not at all at 192 kHz.
        sine(96_000, 1.0, 40_000.0, -2.0, 0.7),
        sine(192_000, 0.5, 80_000.0, -2.0, 0.7),
    ];
    for (i, a) in signals.iter().enumerate() {
        let mut m = truepeak::TruePeakMeter::new(a.num_channels(), a.rate);
        // Odd chunk sizes: the reading must not depend on them.
        a.chunks(7_777).for_each(|c| m.add(&c));
        let ours = lin_to_db(m.finish_both().reference as f64);
        let theirs = ebur128_true_peak(a);
        assert!(
            (ours - theirs).abs() < 1e-4,
            "signal {i}: ours {ours} dBTP, ebur128 {theirs} dBTP"
        );
    }
}
