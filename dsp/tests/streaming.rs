//! The render streams in blocks: how the track is cut into blocks (by the
//! decoder and by the pipeline) must not change a bit of any master.

use loopmind_dsp::analysis::structure;
use loopmind_dsp::analysis::{beats, sections};
use loopmind_dsp::pipeline::{self, AudioSource};
use loopmind_dsp::planning::modes::Mode;
use loopmind_dsp::planning::plan::{self, Sliders};
use loopmind_dsp::process::chain::WORKING_LUFS;
use loopmind_dsp::process::master::{master_target, MemorySink, TargetMaster};
use loopmind_dsp::store::MemoryScratch;
use loopmind_dsp::testsignals::{demo_arrangement, song};
use loopmind_dsp::Audio;

/// The product's passes for two targets, one at the source rate and one
/// resampled; returns what each master measured and its samples.
fn render(audio: &Audio, chunk: usize, block: usize) -> Vec<(TargetMaster, Vec<Vec<f32>>)> {
    let mut src = AudioSource::new(audio, chunk);
    let mut scratch = MemoryScratch;
    let mode = Mode::Cinematic;
    let sliders = Sliders::default();
    let analysis = pipeline::analyse(&mut src, false, block).unwrap();
    let (input_lufs, _) = analysis.features.loudness();
    let grid = beats::grid(&analysis.onsets);
    let found = structure::detect_with(
        analysis.seconds(),
        &analysis.features,
        grid.as_ref(),
        Some(&analysis.onsets),
    );
    assert!(found.len() > 2, "a song with sections: {found:?}");
    let character = sections::section_intensity(&analysis.features, &found);
    let chain = plan::global(&mode.chain(), sliders);
    let mut section_plan = plan::plan(&found, &character, &mode.chain(), mode, sliders);
    let mut processed = pipeline::process(
        &mut src,
        &chain,
        input_lufs,
        &section_plan,
        &found,
        (5.0, 20.0),
        &mut scratch,
        block,
    )
    .unwrap();
    plan::set_loudness(
        &mut section_plan,
        &processed.section_lufs,
        mode,
        sliders,
        1.0,
    );
    let mut out = Vec::new();
    for (rate, name) in [(44_100, "spotify"), (48_000, "ebu-r128")] {
        let prep =
            pipeline::prepare(&mut processed, &section_plan, rate, &mut scratch, block).unwrap();
        let mut t = loopmind_dsp::targets::preset(name).unwrap();
        t.rate = Some(rate);
        let mut sink = MemorySink::new(2);
        let m = master_target(
            &prep,
            &t,
            &chain.limiter,
            WORKING_LUFS - input_lufs,
            7,
            &mut sink,
        )
        .unwrap();
        out.push((m, sink.0));
    }
    out
}

#[test]
fn small_and_large_blocks_give_the_same_bits() {
    let (audio, _) = song(44_100, &demo_arrangement(), 3);
    let small = render(&audio, 1000, 1024);
    let large = render(&audio, 44_100, 65_536);
    // And the whole track as one block, as a whole-buffer engine sees it.
    let whole = render(&audio, audio.frames(), audio.frames().next_multiple_of(8));
    for ((a, sa), (b, sb)) in small.iter().zip(&large).chain(small.iter().zip(&whole)) {
        assert_eq!(a.params, b.params);
        assert_eq!(a.measured.checksum, b.measured.checksum);
        assert_eq!(sa, sb, "the written samples");
        assert!(
            (a.measured.loudness.integrated_lufs - b.measured.loudness.integrated_lufs).abs()
                < 1e-9
        );
    }
    // The resampled master is as long as the source's duration at its rate.
    let want = (audio.frames() as u64 * 48_000).div_ceil(44_100) as usize;
    assert_eq!(small[1].1[0].len(), want);
    assert_eq!(small[0].1[0].len(), audio.frames());
}
