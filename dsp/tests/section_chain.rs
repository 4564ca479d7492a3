//! The chain following a section plan: each section gets its own tone, the
//! changes are smooth, and a plan with one setting is the static chain.

use loopmind_dsp::analysis::sections::Section;
use loopmind_dsp::planning::modes::Mode;
use loopmind_dsp::planning::plan::{self, SectionPlan, Sliders};
use loopmind_dsp::Audio;

const RATE: u32 = 48_000;

/// A stereo tone pair: a 440 Hz mid and a 660 Hz side component.
fn stereo_tones(seconds: f64) -> Audio {
    let n = (seconds * RATE as f64) as usize;
    let w = |f: f64, i: usize| (2.0 * std::f64::consts::PI * f * i as f64 / RATE as f64).sin();
    let (mut l, mut r) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let (m, s) = (0.1 * w(440.0, i), 0.05 * w(660.0, i));
        l.push((m + s) as f32);
        r.push((m - s) as f32);
    }
    Audio::new(RATE, vec![l, r]).unwrap()
}

fn song_plan(mode: Mode, sliders: Sliders) -> Vec<SectionPlan> {
    let s = |label: &str, a, b| Section {
        label: label.into(),
        start: a,
        end: b,
    };
    let sections = [
        s("Intro", 0.0, 4.0),
        s("Chorus", 4.0, 8.0),
        s("Outro", 8.0, 12.0),
    ];
    let character = [
        (0.1, "calm".to_string()),
        (0.9, "powerful".to_string()),
        (0.1, "calm".to_string()),
    ];
    plan::plan(&sections, &character, &mode.chain(), mode, sliders)
}

fn side_to_mid(a: &Audio, from: f64, to: f64) -> f64 {
    let r = (from * RATE as f64) as usize..(to * RATE as f64) as usize;
    let (mut m, mut s) = (0f64, 0f64);
    for i in r {
        let (l, rr) = (a.channels[0][i] as f64, a.channels[1][i] as f64);
        m += (0.5 * (l + rr)).powi(2);
        s += (0.5 * (l - rr)).powi(2);
    }
    (s / m).sqrt()
}

#[test]
fn each_section_gets_its_own_width() {
    let p = song_plan(Mode::Cinematic, Sliders::default());
    assert!(p[1].width > p[0].width + 0.1, "{p:?}");
    let chain = plan::global(&Mode::Cinematic.chain(), Sliders::default());
    let mut a = stereo_tones(12.0);
    let before = side_to_mid(&a, 1.0, 3.0);
    // Working level = input level: no gain change, tone shaping only.
    chain.run_with(&mut a, -18.0, plan::chain_curves(&chain, &p));
    for (k, sec) in p.iter().enumerate() {
        let got = side_to_mid(&a, sec.start + 1.0, sec.end - 1.0);
        // EQ and saturation move mid and side a little; width moves their ratio.
        let want = before * sec.width;
        assert!(
            (got / want - 1.0).abs() < 0.08,
            "section {k}: side/mid {got:.4}, planned {want:.4}"
        );
    }
}

#[test]
fn a_plan_with_one_setting_is_the_static_chain() {
    let still = Sliders {
        reactivity: 0.0,
        ..Sliders::default()
    };
    let p = song_plan(Mode::Cinematic, still);
    let chain = plan::global(&Mode::Cinematic.chain(), still);
    let (mut a, mut b) = (stereo_tones(12.0), stereo_tones(12.0));
    chain.run_with(&mut a, -20.0, plan::chain_curves(&chain, &p));
    chain.run(&mut b, -20.0);
    assert_eq!(a.channels, b.channels);
}

#[test]
fn tone_changes_at_boundaries_do_not_click() {
    // Full reactivity in every mode: the output's sample-to-sample change near
    // a boundary stays within the tone's own steady-state range.
    for mode in [Mode::Cinematic, Mode::RadioLoud, Mode::LoFi] {
        let p = song_plan(mode, Sliders::default());
        let chain = plan::global(&mode.chain(), Sliders::default());
        let mut a = stereo_tones(12.0);
        chain.run_with(&mut a, -18.0, plan::chain_curves(&chain, &p));
        let d3 = |v: &[f32], i: usize| (v[i + 3] - 3.0 * v[i + 2] + 3.0 * v[i + 1] - v[i]).abs();
        for ch in &a.channels {
            let steady = |from: f64| {
                let s = (from * RATE as f64) as usize;
                (s..s + RATE as usize / 2)
                    .map(|i| d3(ch, i))
                    .fold(0f32, f32::max)
            };
            let calm = steady(2.0).max(steady(6.0));
            let b = 4 * RATE as usize;
            let boundary = (b - RATE as usize..b + RATE as usize)
                .map(|i| d3(ch, i))
                .fold(0f32, f32::max);
            assert!(
                boundary <= calm * 1.05,
                "{mode:?}: boundary {boundary} vs steady {calm}"
            );
        }
    }
}
