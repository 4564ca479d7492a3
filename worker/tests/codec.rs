//! The codec check on a master that overshoots once encoded (the demo
//! song, limited hard, through Opus at 64 kb/s): `off` leaves it unchecked,
//! `report` measures the overshoot and leaves the master alone, `enforce`
//! renders it again until the decoded Opus is under the ceiling, with the
//! loudness still on target.

use loopmind_dsp::targets::{Codec, Format, Lossy, Target};
use loopmind_dsp::testsignals::{demo_arrangement, song};
use loopmind_worker::codec::CodecCheck;
use loopmind_worker::render::{render_masters, RenderInputs};
use loopmind_worker::RenderRequest;
use serde_json::json;

/// Render inputs of a request written as JSON.
fn inputs(request: serde_json::Value) -> RenderInputs {
    RenderInputs::of(
        RenderRequest::from_json(request).unwrap(),
        Default::default(),
    )
}
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
    let opts = inputs(json!({"targets": [target()], "mode": "radio-loud", "codec_check": check}));
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

/// A target its codec would clip at its loudness (-7 LUFS through Opus
/// 64k) is withheld, not shipped and not failed with the track: no WAV, no
/// preview, the report says why and what ceiling the codec needed; the
/// track's other target is mastered as usual.
#[test]
fn a_target_its_codec_would_clip_is_withheld_and_the_others_ship() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mix.wav");
    write_song(&input, 30);
    let mut loud = target();
    loud.lufs = -7.0;
    let plain = loopmind_dsp::targets::preset("apple-music").unwrap();
    let opts = inputs(json!({"targets": [loud, plain], "mode": "radio-loud",
        "codec_check": "enforce", "formats": ["flac", "opus"]}));
    let out = dir.path().join("out");
    let report = render_masters(&input, "t", &out, &opts).unwrap();
    let w = &report.targets[0];
    let why = w.withheld.as_deref().expect("withheld");
    assert!(why.contains("opus") || why.contains("LUFS"), "{why}");
    assert!(
        !out.join(&w.output_file).exists(),
        "a withheld master was left"
    );
    assert!(w.files.is_empty() && w.preview.is_none());
    assert!(w.codec_ceiling_dbtp.unwrap() < loud.ceiling_dbtp);
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .chain(std::fs::read_dir(out.join("preview")).unwrap())
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("loud-opus"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The report reads back, withheld and all.
    let text = serde_json::to_string(&report).unwrap();
    let back: TrackReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back.targets[0].withheld.as_deref(), Some(why));

    let a = &report.targets[1];
    assert!(a.withheld.is_none());
    assert!(out.join(&a.output_file).is_file());
    assert_eq!(a.files.len(), 2);
    assert!((a.integrated_lufs - plain.lufs).abs() <= 0.1);
}

/// The loud target's master of `seconds` of the song, rendered with the
/// check off, and its own levels: what the checks below encode.
fn unchecked_master(
    dir: &Path,
    seconds: usize,
) -> (
    std::path::PathBuf,
    loopmind_worker::codec::check::MasterLevels,
) {
    let input = dir.join("mix.wav");
    write_song(&input, seconds);
    let off = render(&input, &dir.join("m"), CodecCheck::Off);
    let levels = loopmind_worker::codec::check::MasterLevels {
        true_peak_dbtp: off.targets[0].true_peak_dbtp,
        integrated_lufs: off.targets[0].integrated_lufs,
    };
    (dir.join("m").join("loud-opus.wav"), levels)
}

/// Each codec's file decodes with ffmpeg too (an independent decoder), and
/// the peak the check read through its own decoder is the peak of ffmpeg's
/// decode (same 16x meter), so the check is not measuring its decoder. (Red
/// with symphonia's MP3 decoder, which clamps at full scale: 0.015 against
/// ffmpeg's 0.115 dBTP.)
#[test]
fn every_codec_file_decodes_elsewhere_to_the_peak_the_check_read() {
    use loopmind_worker::codec::check::check;
    let dir = tempfile::tempdir().unwrap();
    let (master, levels) = unchecked_master(dir.path(), 40);
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
        let mut m = loopmind_dsp::measure::truepeak::TruePeakMeter::new(nch, spec.sample_rate);
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

/// ffprobe's tags of a file (format and stream tags, keys lower-cased).
fn probe_tags(path: &Path) -> std::collections::HashMap<String, String> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format_tags:stream_tags",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (installed with ffmpeg)");
    assert!(out.status.success(), "ffprobe failed on {}", path.display());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut tags = std::collections::HashMap::new();
    let mut take = |t: &serde_json::Value| {
        for (k, v) in t.as_object().into_iter().flatten() {
            tags.insert(k.to_lowercase(), v.as_str().unwrap_or_default().to_string());
        }
    };
    take(&v["format"]["tags"]);
    for s in v["streams"].as_array().into_iter().flatten() {
        take(&s["tags"]);
    }
    tags
}

/// `--formats`: each deliverable sits beside the WAV, is listed in the
/// report with its codec (the platform's bitrate where it streams the
/// format), decodes with ffmpeg, carries the track's tags and its loudness
/// as ReplayGain (R128 for Opus), and was checked like the platform's codecs.
#[test]
fn encoded_deliverables_decode_and_carry_their_tags() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("mix.wav");
    write_song(&wav, 40);
    let input = dir.path().join("mix.flac");
    let st = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&wav)
        .args([
            "-metadata",
            "title=Codec Song",
            "-metadata",
            "artist=LoopMind Tests",
            "-metadata",
            "album=Deliverables",
            "-metadata",
            "ISRC=QZABC2600001",
        ])
        .arg(&input)
        .status()
        .unwrap();
    assert!(st.success());
    let out = dir.path().join("out");
    let mut spotify = loopmind_dsp::targets::preset("spotify").unwrap();
    spotify.lufs = -12.0;
    let opts = inputs(json!({"targets": [spotify], "mode": "radio-loud",
        "formats": ["flac", "aac", "mp3", "opus", "vorbis"]}));
    let report = render_masters(&input, "t", &out, &opts).unwrap();
    let t = &report.targets[0];
    assert_eq!(report.input.tags.isrc.as_deref(), Some("QZABC2600001"));
    let kbps = |f: Format| t.files.iter().find(|e| e.format == f).map(|e| e.kbps);
    assert_eq!(t.files.len(), 5, "{:?}", t.files);
    // Spotify streams AAC 128k and Vorbis 160k; the others at their defaults.
    assert_eq!(kbps(Format::Aac), Some(Some(128)));
    assert_eq!(kbps(Format::Vorbis), Some(Some(160)));
    assert_eq!(kbps(Format::Mp3), Some(Some(320)));
    assert_eq!(kbps(Format::Opus), Some(Some(160)));
    assert_eq!(kbps(Format::Flac), Some(None));
    for f in &t.files {
        let path = out.join(&f.file);
        assert!(path.is_file(), "{} missing", f.file);
        // A lossy one was checked: its reading is in the report, under the
        // ceiling (enforced). FLAC holds the WAV's own integers.
        if let Some(codec) = f.codec() {
            let r = t.codecs.iter().find(|c| c.codec == codec).expect("checked");
            assert!(r.true_peak_dbtp <= t.ceiling_dbtp, "{r:?}");
        } else {
            let wav = out.join(&t.output_file);
            assert_eq!(pcm_s32(&path), pcm_s32(&wav), "FLAC differs from the WAV");
        }
        let dec = dir.path().join(format!("{}.dec.wav", f.file));
        let st = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-i"])
            .arg(&path)
            .args(["-c:a", "pcm_f32le"])
            .arg(&dec)
            .status()
            .unwrap();
        assert!(st.success(), "ffmpeg cannot decode {}", f.file);
        let secs = hound::WavReader::open(&dec).unwrap().duration() as f64 / 48_000.0;
        assert!((secs - 40.0).abs() < 0.2, "{}: {secs} s", f.file);
        if f.format == Format::Aac {
            // AAC in MP4, whose tags ffprobe reads (bare ADTS has none).
            assert!(f.file.ends_with(".m4a"), "{}", f.file);
        }
        let tags = probe_tags(&path);
        for (k, v) in [
            ("title", "Codec Song"),
            ("artist", "LoopMind Tests"),
            ("album", "Deliverables"),
        ] {
            assert_eq!(
                tags.get(k).map(String::as_str),
                Some(v),
                "{}: {tags:?}",
                f.file
            );
        }
        let isrc = tags.get("isrc").or(tags.get("tsrc"));
        assert_eq!(
            isrc.map(String::as_str),
            Some("QZABC2600001"),
            "{}: {tags:?}",
            f.file
        );
        let gain = if f.format == Format::Opus {
            // Q7.8 towards -23 LUFS: (-23 - -12) * 256.
            let g: i32 = tags["r128_track_gain"].parse().unwrap();
            assert!((g - (-11 * 256)).abs() <= 26, "{g}");
            continue;
        } else {
            tags.get("replaygain_track_gain").cloned()
        };
        // ReplayGain 2 towards -18 LUFS: -6 dB for a -12 LUFS master.
        let gain = gain.unwrap_or_else(|| panic!("{}: no ReplayGain in {tags:?}", f.file));
        let g: f64 = gain.trim_end_matches(" dB").parse().unwrap();
        assert!((g + 6.0).abs() < 0.1, "{}: {gain}", f.file);
    }
}

/// A file's samples as ffmpeg decodes them to 32-bit integers.
fn pcm_s32(path: &std::path::Path) -> Vec<u8> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "s32le", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg cannot decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.len() > 1000);
    out.stdout
}

/// Verifying only where the master comes near its ceiling: on a master
/// whose first two thirds sit 10 dB under the rest, the regions of every
/// codec that settles cover under half of it and read the whole file's
/// decoded peak (within 0.05 dB) and verdict. (Opus does not settle: it is
/// verified whole, see `regions::settles`.)
#[test]
fn regions_near_the_ceiling_read_what_the_whole_file_reads() {
    use loopmind_worker::codec::check::check;
    use loopmind_worker::codec::regions;
    let dir = tempfile::tempdir().unwrap();
    let (master, levels) = unchecked_master(dir.path(), 30);
    // The master's first 20 s, 10 dB down.
    let mut r = hound::WavReader::open(&master).unwrap();
    let spec = r.spec();
    let samples: Vec<i32> = r.samples::<i32>().map(Result::unwrap).collect();
    let quiet = dir.path().join("quiet-then-loud.wav");
    let mut w = hound::WavWriter::create(&quiet, spec).unwrap();
    for (i, s) in samples.iter().enumerate() {
        let f = i / spec.channels as usize;
        let g = if f < 20 * 48_000 { 0.316 } else { 1.0 };
        w.write_sample((*s as f64 * g).round() as i32).unwrap();
    }
    w.finalize().unwrap();
    let ceiling = target().ceiling_dbtp;
    let limits = Default::default();
    let hot = regions::hot_spans(&quiet, &limits, ceiling).unwrap();
    assert!(!regions::settles(Codec {
        format: Lossy::Opus,
        kbps: 128
    }));
    for (format, kbps) in [(Lossy::Aac, 128), (Lossy::Mp3, 320), (Lossy::Vorbis, 160)] {
        let codec = Codec { format, kbps };
        assert!(regions::settles(codec));
        let rs = regions::regions(&hot, codec);
        let part = regions::check(&quiet, codec, &rs, levels, dir.path(), "r", &limits).unwrap();
        let (whole, _) = check(
            &quiet,
            levels,
            &[codec],
            dir.path(),
            "w",
            &Default::default(),
            &limits,
        )
        .unwrap()
        .remove(0);
        assert!(
            part.encoded_fraction < 0.5,
            "{codec}: {}",
            part.encoded_fraction
        );
        let peak = |r: &loopmind_worker::codec::check::CodecReport| {
            r.true_peak_dbtp.max(r.true_peak_bs1770_dbtp)
        };
        assert!(
            (peak(&part) - peak(&whole)).abs() <= 0.05,
            "{codec}: regions {:.3}, whole {:.3} dBTP",
            peak(&part),
            peak(&whole)
        );
        assert_eq!(part.over(ceiling), whole.over(ceiling), "{codec}");
        assert!(
            part.loudness_shift_lu.abs() < 0.5,
            "{codec}: {}",
            part.loudness_shift_lu
        );
    }
}

/// A probe (a sample of a long master's hottest stretches, read to step the
/// ceiling of a first render under `enforce`) covers a small share of the
/// master and reads at most what the whole file reads (0.05 dB: the regions'
/// agreement). On the development tracks it read up to 0.35 dB under (the
/// margin the ceiling is stepped with); here, with the master's level swaying
/// slowly, it finds the whole file's peak within 0.1 dB. (Red, 0.2 dB under,
/// with the quietest hot block of each stretch taken instead of the hottest.)
#[test]
fn a_probe_reads_a_sample_of_the_master_close_under_the_whole_file() {
    use loopmind_worker::codec::check::{check, CodecReport};
    use loopmind_worker::codec::regions;
    let dir = tempfile::tempdir().unwrap();
    let (loud, levels) = unchecked_master(dir.path(), 150);
    // The master's level swaying 3 dB over 50 s: its hottest stretches are
    // somewhere in each eighth, never all of it.
    let mut r = hound::WavReader::open(&loud).unwrap();
    let spec = r.spec();
    let samples: Vec<i32> = r.samples::<i32>().map(Result::unwrap).collect();
    let master = dir.path().join("swaying.wav");
    let mut w = hound::WavWriter::create(&master, spec).unwrap();
    for (i, s) in samples.iter().enumerate() {
        let t = (i / spec.channels as usize) as f64 / spec.sample_rate as f64;
        let db = -3.0 * (0.5 - 0.5 * (std::f64::consts::TAU * t / 50.0).cos());
        w.write_sample((*s as f64 * 10f64.powf(db / 20.0)).round() as i32)
            .unwrap();
    }
    w.finalize().unwrap();
    let ceiling = target().ceiling_dbtp;
    let limits = Default::default();
    let hot = regions::hot_spans(&master, &limits, ceiling).unwrap();
    let peak = |r: &CodecReport| r.true_peak_dbtp.max(r.true_peak_bs1770_dbtp);
    for (format, kbps) in [(Lossy::Aac, 128), (Lossy::Mp3, 320)] {
        let codec = Codec { format, kbps };
        let rs = regions::probe(&hot, codec, 8, 4 * hot.rate as u64);
        assert!(rs.len() >= 6, "{codec}: {rs:?}");
        let p = regions::check(&master, codec, &rs, levels, dir.path(), "p", &limits).unwrap();
        let (whole, _) = check(
            &master,
            levels,
            &[codec],
            dir.path(),
            "w",
            &Default::default(),
            &limits,
        )
        .unwrap()
        .remove(0);
        assert!(p.encoded_fraction < 0.35, "{codec}: {}", p.encoded_fraction);
        let (p, w) = (peak(&p), peak(&whole));
        assert!(
            p <= w + 0.05 && p >= w - 0.1,
            "{codec}: probe {p:.3}, whole {w:.3} dBTP"
        );
    }
}
