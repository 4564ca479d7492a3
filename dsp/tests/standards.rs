//! The analysis path against EBU Tech 3341 (loudness, true peak) and
//! Tech 3342 (loudness range), on signals generated here. Our own BS.1770
//! meter (what every report states) is also held to the ebur128 crate's
//! reading of the same signal.

use loopmind_dsp::measure::{bs1770, loudness, truepeak};
use loopmind_dsp::testsignals::{sine, song, stepped_sine};
use loopmind_dsp::Audio;

/// Our integrated loudness, checked against ebur128's and the gain search's
/// per-frame model.
fn integrated(a: &Audio) -> f64 {
    let (ours, _) = bs1770::measure(a);
    let reference = loudness::measure(a).unwrap().integrated_lufs;
    assert!(
        (ours - reference).abs() < 0.01,
        "ours {ours} vs ebur128 {reference}"
    );
    let model = bs1770::integrated_from_power(&bs1770::k_power(a), a.rate);
    assert!((ours - model).abs() < 0.01, "model {model} vs ours {ours}");
    ours
}

#[test]
fn our_meter_reads_music_as_ebur128_does() {
    // A multi-section song at several rates, mono and stereo: integrated
    // loudness and LRA as the ebur128 crate's queue mode reads them.
    for rate in [22_050, 44_100, 48_000, 96_000] {
        let (stereo, _) = song(rate, &loopmind_dsp::testsignals::demo_arrangement(), 3);
        let mono = Audio::new(rate, vec![stereo.channels[0].clone()]).unwrap();
        for a in [stereo, mono] {
            let (i, lra) = bs1770::measure(&a);
            let r = loudness::measure(&a).unwrap();
            assert!(
                (i - r.integrated_lufs).abs() < 0.005,
                "{rate} Hz, {} ch: I {i} vs ebur128 {}",
                a.num_channels(),
                r.integrated_lufs
            );
            assert!(
                (lra - r.lra_lu).abs() < 0.01,
                "{rate} Hz, {} ch: LRA {lra} vs ebur128 {}",
                a.num_channels(),
                r.lra_lu
            );
            assert!(lra > 3.0, "the song has contrast: LRA {lra}");
        }
    }
}

#[test]
fn tech3341_cases_1_to_5_integrated() {
    let cases: [(&[(f64, f64)], f64); 5] = [
        (&[(20.0, -23.0)], -23.0),
        (&[(20.0, -33.0)], -33.0),
        (&[(10.0, -36.0), (60.0, -23.0), (10.0, -36.0)], -23.0),
        (
            &[
                (10.0, -72.0),
                (10.0, -36.0),
                (60.0, -23.0),
                (10.0, -36.0),
                (10.0, -72.0),
            ],
            -23.0,
        ),
        (&[(20.0, -26.0), (20.1, -20.0), (20.0, -26.0)], -23.0),
    ];
    for (i, (steps, want)) in cases.iter().enumerate() {
        for rate in [44_100, 48_000] {
            let got = integrated(&stepped_sine(rate, 1000.0, steps));
            assert!(
                (got - want).abs() <= 0.1,
                "case {} at {rate}: {got} LUFS, want {want}",
                i + 1
            );
        }
    }
}

#[test]
fn tech3341_case_9_short_term_is_constant() {
    // 20 x (1.34 s at -20 dBFS, 1.66 s at -30 dBFS): short-term loudness
    // (3 s window) stays at -23.0 +-0.1 once the first window is full.
    let steps: Vec<(f64, f64)> = (0..20)
        .flat_map(|_| [(1.34, -20.0), (1.66, -30.0)])
        .collect();
    let a = stepped_sine(48_000, 1000.0, &steps);
    let l = loudness::measure(&a).unwrap();
    let curve = &l.short_term_lufs;
    let first = (3.0 / loudness::CURVE_HOP_SECONDS) as usize;
    assert!(curve.len() > first + 100);
    for (i, s) in curve.iter().enumerate().skip(first) {
        assert!(
            (s + 23.0).abs() <= 0.1,
            "short-term at {:.1} s is {s}",
            i as f64 * 0.1
        );
    }
}

#[test]
fn tech3341_cases_15_to_19_true_peak() {
    // (frequency as a fraction of fs, phase in degrees, sample-peak gain, expected dBTP)
    let fs = 48_000.0;
    let cases = [
        (0.25f64, 0.0f64, -6.0f64, -6.0f64),
        (0.25, 45.0, -6.0, -6.0),
        (1.0 / 6.0, 60.0, -6.0, -6.0),
        (0.125, 67.5, -6.0, -6.0),
        (0.25, 45.0, 3.0, 3.0),
    ];
    for (i, (f, ph, peak, want)) in cases.iter().enumerate() {
        let mut a = sine(48_000, 2.0, f * fs, *peak, ph.to_radians());
        // Fade the ends: a hard start rings (Gibbs) above the tone's own peak.
        let n = a.frames();
        for c in &mut a.channels {
            for k in 0..4800 {
                let w = (k as f32 / 4800.0).powi(2);
                c[k] *= w;
                c[n - 1 - k] *= w;
            }
        }
        let got = truepeak::true_peak_dbtp(&a);
        assert!(
            got <= want + 0.2 && got >= want - 0.4,
            "case {}: {got} dBTP, want {want}",
            i + 15
        );
        // Ours is near-ideal: much tighter than the standard asks.
        assert!(
            (got - want).abs() < 0.05,
            "case {}: {got} dBTP is not near-ideal",
            i + 15
        );
    }
}

#[test]
fn tech3342_lra_cases_1_to_4() {
    let cases: [(&[(f64, f64)], f64); 4] = [
        (&[(20.0, -20.0), (20.0, -30.0)], 10.0),
        (&[(20.0, -20.0), (20.0, -15.0)], 5.0),
        (&[(20.0, -40.0), (20.0, -20.0)], 20.0),
        (
            &[
                (20.0, -50.0),
                (20.0, -35.0),
                (20.0, -20.0),
                (20.0, -35.0),
                (20.0, -50.0),
            ],
            15.0,
        ),
    ];
    for (i, (steps, want)) in cases.iter().enumerate() {
        let (_, lra) = bs1770::measure(&stepped_sine(48_000, 1000.0, steps));
        assert!(
            (lra - want).abs() <= 1.0,
            "LRA case {}: {lra}, want {want}",
            i + 1
        );
    }
}
