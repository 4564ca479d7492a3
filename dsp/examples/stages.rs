//! Where one target's time goes: the product's passes ([`loopmind_dsp::pipeline`])
//! timed one by one on a 5-minute 44.1 kHz stereo song (the benchmark's
//! material), single-threaded, with the stores in memory; then the meters
//! on the master, ours against the ebur128 crate.
//! `cargo run --release -p loopmind-dsp --example stages [seconds]`

use loopmind_dsp::analysis::structure;
use loopmind_dsp::analysis::{beats, sections};
use loopmind_dsp::measure::loudness::{measure_with, Measure};
use loopmind_dsp::measure::truepeak;
use loopmind_dsp::pipeline::{self, AudioSource, BLOCK};
use loopmind_dsp::planning::modes::Mode;
use loopmind_dsp::planning::plan::{self, Sliders};
use loopmind_dsp::process::chain::WORKING_LUFS;
use loopmind_dsp::process::limiter::LimiterSettings;
use loopmind_dsp::process::master::{master_target, measure_pass, MemorySink, NullSink, Prepared};
use loopmind_dsp::store::MemoryScratch;
use loopmind_dsp::testsignals::{demo_arrangement, song};
use loopmind_dsp::Audio;
use std::time::Instant;

fn time<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    println!("{label:<44} {:>7.3} s", t.elapsed().as_secs_f64());
    v
}

fn main() {
    let seconds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut audio = demo_song(seconds);
    println!("{} s of stereo at 44.1 kHz", audio.frames() / 44_100);
    let (prep, limiter, pre) = passes(&audio);
    let master = target(&prep, &limiter, pre);
    meters(&master);
    audio.channels.clear();
}

/// The demo arrangement repeated to `seconds` of 44.1 kHz stereo.
fn demo_song(seconds: usize) -> Audio {
    let repeats = seconds.div_ceil(72).max(1);
    let sections: Vec<_> = demo_arrangement()
        .into_iter()
        .cycle()
        .take(5 * repeats)
        .collect();
    let (mut audio, _) = song(44_100, &sections, 7);
    audio
        .channels
        .iter_mut()
        .for_each(|c| c.truncate(seconds * 44_100));
    audio
}

/// The passes up to the master, timed: analysis, planning, the chain,
/// preparation at 44.1 kHz. Returns what the master needs: the prepared
/// audio, the limiter and the gain already applied.
fn passes(audio: &Audio) -> (Prepared, LimiterSettings, f64) {
    let mode = Mode::Cinematic;
    let sliders = Sliders::default();
    let mut src = AudioSource::new(audio, 4096);
    let mut scratch = MemoryScratch;
    let analysis = time("pass 1: analysis (features, onsets, 16x TP)", || {
        pipeline::analyse(&mut src, false, BLOCK).unwrap()
    });
    let (input_lufs, _) = analysis.features.loudness();
    let (found, character) = time("plan: beat grid, sections, intensity", || {
        let grid = beats::grid(&analysis.onsets);
        let found = structure::detect_with(
            analysis.seconds(),
            &analysis.features,
            grid.as_ref(),
            Some(&analysis.onsets),
        );
        let character = sections::section_intensity(&analysis.features, &found);
        (found, character)
    });
    println!("  {} sections", found.len());
    let chain = plan::global(&mode.chain(), sliders);
    let mut section_plan = plan::plan(&found, &character, &mode.chain(), mode, sliders);
    let mut processed = time("pass 2: chain + band limit (stored)", || {
        pipeline::process(
            &mut src,
            &chain,
            input_lufs,
            &section_plan,
            &found,
            (0.0, 30.0),
            &mut scratch,
            BLOCK,
        )
        .unwrap()
    });
    plan::set_loudness(
        &mut section_plan,
        &processed.section_lufs,
        mode,
        sliders,
        1.0,
    );
    let prep = time("pass 3: gain, envelope, model power", || {
        pipeline::prepare(&mut processed, &section_plan, 44_100, &mut scratch, BLOCK).unwrap()
    });
    (prep, chain.limiter, WORKING_LUFS - input_lufs)
}

/// The gain search and one measured render onto Spotify's target, timed;
/// returns the master.
fn target(prep: &Prepared, limiter: &LimiterSettings, pre: f64) -> Audio {
    let t = loopmind_dsp::targets::preset("spotify").unwrap();
    let m = time("gain search + measured render (spotify)", || {
        master_target(prep, &t, limiter, pre, 1, &mut NullSink).unwrap()
    });
    println!("  renders: {}, model passes: {}", m.passes, m.model_passes);
    time("  of which one measured render", || {
        measure_pass(prep, &m.params, &mut NullSink).unwrap()
    });
    let mut keep = MemorySink::new(2);
    measure_pass(prep, &m.params, &mut keep).unwrap();
    Audio::new(44_100, keep.0).unwrap()
}

/// Our meters against the ebur128 crate's, on the master.
fn meters(master: &Audio) {
    let only_i = Measure::INTEGRATED;
    let i_lra = Measure {
        lra: true,
        ..only_i
    };
    let tp = Measure {
        true_peak: true,
        ..only_i
    };
    println!("\nmeters on the master:");
    time("ebur128 I + LRA", || measure_with(master, i_lra).unwrap());
    time("our meter I + LRA", || {
        loopmind_dsp::measure::bs1770::measure(master)
    });
    time("ebur128 I + 4x true peak", || {
        measure_with(master, tp).unwrap()
    });
    time("our 16x true-peak meter", || {
        truepeak::true_peak_dbtp(master)
    });
}
