use loopmind_dsp::*;
fn main() {
    let t = std::time::Instant::now();
    let mut sections = testsignals::demo_arrangement();
    // stretch to ~5 minutes
    for s in &mut sections {
        s.bars *= 4;
    }
    let (mut audio, _) = testsignals::song(44100, &sections, 7);
    println!("song {:.1}s gen {:?}", audio.seconds(), t.elapsed());
    let t = std::time::Instant::now();
    let inl = loudness::measure(&audio).unwrap();
    println!(
        "input I {:.2} LRA {:.2} TP {:.2} took {:?}",
        inl.integrated_lufs,
        inl.lra_lu,
        inl.true_peak_ebur128_dbtp,
        t.elapsed()
    );
    let mode: modes::Mode = std::env::args()
        .nth(1)
        .unwrap_or("transparent".into())
        .parse()
        .unwrap();
    let chain = mode.chain();
    let t = std::time::Instant::now();
    chain.run(&mut audio, inl.integrated_lufs);
    println!("chain {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let prep = master::Prepared::new(audio).unwrap();
    println!(
        "prepare {:?} model lufs {:.3} ebur {:.3}",
        t.elapsed(),
        prep.lufs,
        loudness::integrated(&prep.audio).unwrap()
    );
    for name in ["spotify", "club", "ebu-r128"] {
        let t = std::time::Instant::now();
        let target = targets::preset(name).unwrap();
        let m = master::master_target(
            &prep,
            &target,
            &chain.limiter,
            -18.0 - inl.integrated_lufs,
            1,
            &mut master::NullSink,
        )
        .unwrap();
        println!(
            "{name}: I {:.3} TP16 {:.3} TPe {:.3} GR {:.2}/{:.2} passes {} took {:?}",
            m.measured.loudness.integrated_lufs,
            m.measured.true_peak_dbtp,
            m.measured.loudness.true_peak_ebur128_dbtp,
            m.measured.limiter_gr_max_db,
            m.measured.limiter_gr_mean_db,
            m.passes,
            t.elapsed()
        );
    }
}
