//! Where one target's time goes: each stage of a render timed on its own, on a
//! 5-minute 44.1 kHz stereo song (the benchmark's material), single-threaded.
//! `cargo run --release -p loopmind-dsp --example stages`

use loopmind_dsp::chain::WORKING_LUFS;
use loopmind_dsp::loudness::{measure_with, Measure};
use loopmind_dsp::master::{master_target, measure_pass, NullSink, Prepared};
use loopmind_dsp::modes::Mode;
use loopmind_dsp::plan::{self, Sliders};
use loopmind_dsp::testsignals::{demo_arrangement, song};
use loopmind_dsp::truepeak;
use std::time::Instant;

fn time<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    println!("{label:<44} {:>7.3} s", t.elapsed().as_secs_f64());
    v
}

fn main() {
    let sections: Vec<_> = demo_arrangement().into_iter().cycle().take(5 * 5).collect();
    let (mut audio, _) = song(44_100, &sections, 7);
    audio
        .channels
        .iter_mut()
        .for_each(|c| c.truncate(300 * 44_100));
    println!("{} s of stereo at 44.1 kHz", audio.frames() / 44_100);
    let only_i = Measure::INTEGRATED;
    let i_lra = Measure {
        lra: true,
        ..only_i
    };
    let tp = Measure {
        true_peak: true,
        ..only_i
    };
    time("ebur128 I", || measure_with(&audio, only_i).unwrap());
    let inl = time("ebur128 I + LRA + sample peak", || {
        measure_with(&audio, i_lra).unwrap()
    });
    time("ebur128 I + 4x true peak", || {
        measure_with(&audio, tp).unwrap()
    });
    time("our meter: I + LRA (bs1770)", || {
        loopmind_dsp::bs1770::measure(&audio)
    });
    time("16x true-peak meter", || truepeak::true_peak_dbtp(&audio));
    // What section-aware mastering adds: analysis, planning, automation.
    let features = time("sections: features", || {
        loopmind_dsp::sections::features(&audio)
    });
    let grid = time("sections: beat grid", || loopmind_dsp::beats::track(&audio));
    let found = time("sections: detection + snapping", || {
        loopmind_dsp::sections::detect_with(&audio, &features, grid.as_ref())
    });
    let character = time("sections: intensity", || {
        loopmind_dsp::sections::section_intensity(&features, &found)
    });
    println!(
        "  {} sections, {:.1} BPM",
        found.len(),
        grid.map_or(0.0, |g| g.bpm)
    );
    let sliders = Sliders::default();
    let chain = plan::global(&Mode::Cinematic.chain(), sliders);
    let mut section_plan = time("sections: plan", || {
        plan::plan(
            &found,
            &character,
            &Mode::Cinematic.chain(),
            Mode::Cinematic,
            sliders,
        )
    });
    let mut fixed = audio.clone();
    time("chain (cinematic, one setting)", || {
        chain.run(&mut fixed, inl.integrated_lufs)
    });
    drop(fixed);
    time("chain (cinematic, per-section settings)", || {
        chain.run_planned(&mut audio, inl.integrated_lufs, &section_plan)
    });
    let power = time("bs1770 model power", || {
        loopmind_dsp::bs1770::k_power(&audio)
    });
    time("sections: loudness plan + gain automation", || {
        let l = plan::section_loudness(&power, audio.rate, &found);
        plan::set_loudness(&mut section_plan, &l, Mode::Cinematic, sliders, 1.0);
        plan::apply(&mut audio, &section_plan)
    });
    time("detector envelope", || truepeak::peak_envelope(&audio));
    let prep = time("prepare (power + envelope)", || {
        Prepared::new(audio).unwrap()
    });
    let t = loopmind_dsp::targets::preset("spotify").unwrap();
    let pre = WORKING_LUFS - inl.integrated_lufs;
    let m = time("master_target spotify (null sink)", || {
        master_target(&prep, &t, &chain.limiter, pre, 1, &mut NullSink).unwrap()
    });
    println!("  renders: {}, model passes: {}", m.passes, m.model_passes);
    time("one measure pass", || {
        measure_pass(&prep, &m.params, &mut NullSink).unwrap()
    });
    let mut keep = loopmind_dsp::master::MemorySink::new(2);
    measure_pass(&prep, &m.params, &mut keep).unwrap();
    let master = loopmind_dsp::Audio::new(44_100, keep.0).unwrap();
    time("master: ebur128 I + LRA", || {
        measure_with(&master, i_lra).unwrap()
    });
    time("master: our meter I + LRA", || {
        loopmind_dsp::bs1770::measure(&master)
    });
    time("master: ebur128 I + 4x true peak", || {
        measure_with(&master, tp).unwrap()
    });
    time("master: 16x true-peak meter", || {
        truepeak::true_peak_dbtp(&master)
    });
}
