//! `loopmind demo`: a synthetic song with a quiet intro, verse, loud chorus,
//! breakdown and outro, written as WAV and mastered for a few targets.

use crate::local::{run_batch, Batch, LocalJob};
use anyhow::Result;
use loopmind_dsp::testsignals::{demo_arrangement, song};
use loopmind_worker::RenderRequest;
use std::path::Path;

pub fn run(
    out: &Path,
    settings: &loopmind_worker::config::Settings,
    iso: &loopmind_worker::isolate::Isolation,
) -> Result<bool> {
    std::fs::create_dir_all(out)?;
    let (audio, sections) = song(44_100, &demo_arrangement(), 2026);
    let mix = out.join("demo-song.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: audio.rate,
        bits_per_sample: 24,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&mix, spec)?;
    for i in 0..audio.frames() {
        for c in &audio.channels {
            w.write_sample((c[i].clamp(-1.0, 1.0) * 8_388_607.0) as i32)?;
        }
    }
    w.finalize()?;
    println!("wrote {} ({:.0} s):", mix.display(), audio.seconds());
    for (label, start, end) in &sections {
        println!("  {label:<7} {start:>5.1} - {end:>5.1} s");
    }
    let request = serde_json::json!({
        "targets": ["spotify", "apple-music", "youtube", "cd"],
        "mode": "cinematic",
    });
    let request = RenderRequest::from_json(request)?;
    let masters = out.join("masters");
    let batch = Batch {
        out: &masters,
        request: &request,
        threads: 1,
        album: None,
    };
    let song = LocalJob {
        refused: None,
        track: "demo-song".into(),
        input: mix,
        arrangement: None,
        emotion: None,
    };
    let ok = run_batch(vec![song], &batch, settings, iso)?;
    println!(
        "masters and report.json in {}",
        masters.join("demo-song").display()
    );
    Ok(ok)
}
