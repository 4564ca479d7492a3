//! The codec check on a master that overshoots once encoded (the demo
//! song, limited hard, through Opus at 64 kb/s): `off` leaves it unchecked,
//! `report` measures the overshoot and leaves the master alone, `enforce`
//! renders it again until the decoded Opus is under the ceiling, with the
//! loudness still on target.

use loopmind_dsp::targets::{Codec, Lossy, Target};
use loopmind_dsp::testsignals::{demo_arrangement, song};
use loopmind_worker::codec::CodecCheck;
use loopmind_worker::render::{render_masters, RenderOptions};
use loopmind_worker::report::TrackReport;
use std::path::Path;

fn write_song(path: &Path, seconds: usize) {
    let (a, _) = song(48_000, &demo_arrangement(), 11);
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 48_000,
        bits_per_sample: 24,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..seconds * 48_000 {
        for c in &a.channels {
            let v = c[i % a.frames()].clamp(-1.0, 1.0);
            w.write_sample((v * 8_388_607.0) as i32).unwrap();
        }
    }
    w.finalize().unwrap();
}

fn target() -> Target {
    Target {
        name: "loud-opus".into(),
        lufs: -9.0,
        ceiling_dbtp: -1.0,
        rate: None,
        bits: 24,
        codecs: vec![Codec {
            format: Lossy::Opus,
            kbps: 64,
        }],
    }
}

fn render(input: &Path, out: &Path, check: CodecCheck) -> TrackReport {
    let opts = RenderOptions {
        targets: vec![target()],
        mode: loopmind_dsp::modes::Mode::RadioLoud,
        codec_check: check,
        ..Default::default()
    };
    render_masters(input, "t", out, &opts).unwrap()
}

#[test]
fn enforce_brings_an_overshooting_master_under_its_ceiling_after_the_codec() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mix.wav");
    write_song(&input, 40);
    let t = target();

    let off = render(&input, &dir.path().join("off"), CodecCheck::Off);
    let off_t = &off.targets[0];
    assert!(off_t.codecs.is_empty());
    assert!(off_t.true_peak_dbtp <= t.ceiling_dbtp);

    let report = render(&input, &dir.path().join("report"), CodecCheck::Report);
    let r = &report.targets[0];
    assert_eq!(r.codecs.len(), 1);
    let opus = &r.codecs[0];
    // The master is under its ceiling; the decoded Opus is not.
    assert!(r.true_peak_dbtp <= t.ceiling_dbtp);
    assert!(
        opus.true_peak_dbtp > t.ceiling_dbtp + 0.1,
        "the material should overshoot after Opus 64k: {opus:?}"
    );
    assert!(opus.true_peak_added_db > 0.1, "{opus:?}");
    assert!(r.codec_ceiling_dbtp.is_none());
    // Left alone: the same samples as without the check.
    let bytes = |d: &str| std::fs::read(dir.path().join(d).join("loud-opus.wav")).unwrap();
    assert!(bytes("off") == bytes("report"), "report changed the master");

    let enforced = render(&input, &dir.path().join("enforce"), CodecCheck::Enforce);
    let e = &enforced.targets[0];
    let opus = &e.codecs[0];
    assert!(
        opus.true_peak_dbtp <= t.ceiling_dbtp && opus.true_peak_bs1770_dbtp <= t.ceiling_dbtp,
        "still over after enforcing: {opus:?}"
    );
    assert_eq!((opus.samples_over, opus.intersample_overs), (0, 0));
    let lowered = e.codec_ceiling_dbtp.expect("the ceiling was lowered");
    assert!(lowered < t.ceiling_dbtp - 0.1, "{lowered}");
    assert!(
        e.true_peak_dbtp <= lowered + 0.01,
        "{} over {lowered}",
        e.true_peak_dbtp
    );
    assert!(
        (e.integrated_lufs - t.lufs).abs() <= 0.1,
        "loudness {} off target",
        e.integrated_lufs
    );
    assert!(bytes("enforce") != bytes("off"));
}

/// Each codec's file decodes with ffmpeg too (an independent decoder), and
/// the peak the check read through its own decoder is the peak of ffmpeg's
/// decode (same 16x meter), so the check is not measuring its decoder. (Red
/// with symphonia's MP3 decoder, which clamps at full scale: 0.015 against
/// ffmpeg's 0.115 dBTP.)
#[test]
fn every_codec_file_decodes_elsewhere_to_the_peak_the_check_read() {
    use loopmind_worker::codec::check::{check, MasterLevels};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mix.wav");
    write_song(&input, 40);
    let off = render(&input, &dir.path().join("m"), CodecCheck::Off);
    let master = dir.path().join("m").join("loud-opus.wav");
    let levels = MasterLevels {
        true_peak_dbtp: off.targets[0].true_peak_dbtp,
        integrated_lufs: off.targets[0].integrated_lufs,
    };
    let codecs: Vec<Codec> = [
        (Lossy::Aac, 128),
        (Lossy::Opus, 96),
        (Lossy::Mp3, 192),
        (Lossy::Vorbis, 160),
    ]
    .map(|(format, kbps)| Codec { format, kbps })
    .to_vec();
    let checked = check(
        &master,
        levels,
        &codecs,
        dir.path(),
        "m",
        &Default::default(),
    )
    .unwrap();
    assert_eq!(checked.len(), 4);
    for (r, path) in &checked {
        let wav = path.with_extension("ffmpeg.wav");
        let st = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-i"])
            .arg(path)
            .args(["-c:a", "pcm_f32le"])
            .arg(&wav)
            .status()
            .expect("ffmpeg must be installed (.ci/run installs it)");
        assert!(st.success(), "ffmpeg could not decode {}", path.display());
        let mut rd = hound::WavReader::open(&wav).unwrap();
        let spec = rd.spec();
        let nch = spec.channels as usize;
        let samples: Vec<f32> = rd.samples::<f32>().map(Result::unwrap).collect();
        let planar: Vec<Vec<f32>> = (0..nch)
            .map(|c| samples.iter().skip(c).step_by(nch).copied().collect())
            .collect();
        let mut m = loopmind_dsp::truepeak::TruePeakMeter::new(nch, spec.sample_rate);
        let slices: Vec<&[f32]> = planar.iter().map(Vec::as_slice).collect();
        m.add(&slices);
        let theirs = loopmind_dsp::lin_to_db(m.finish() as f64);
        assert!(
            (theirs - r.true_peak_dbtp).abs() < 0.05,
            "{}: ffmpeg's decode peaks at {theirs:.3} dBTP, the check read {:.3}",
            r.codec,
            r.true_peak_dbtp
        );
        assert!(r.true_peak_dbtp.is_finite() && r.integrated_lufs.is_finite());
    }
}
