//! `loopmind master` end to end: mixes in several formats and rates mastered
//! to several targets, every output checked by ffmpeg's meter and our own.

mod common;

use common::*;
use loopmind_dsp::measure::{loudness, truepeak};
use loopmind_worker::decode::decode_file;
use loopmind_worker::report::TrackReport;
use std::path::Path;

const TARGETS: [(&str, f64, f64); 3] = [
    ("spotify", -14.0, -1.0),
    ("ebu-r128", -23.0, -1.0),
    ("cd", -9.0, -0.3),
];

#[test]
fn masters_every_format_onto_every_target() {
    let dir = tempfile::tempdir().unwrap();
    let mixes = dir.path().join("mixes");
    std::fs::create_dir(&mixes).unwrap();
    let a44 = short_song(44_100);
    let a48 = short_song(48_000);
    write_wav(&mixes.join("wav24.wav"), &a44, 24, false);
    write_wav(&mixes.join("float48.wav"), &a48, 32, true);
    let mut mono = short_song(22_050);
    mono.channels.truncate(1);
    mono.scale(2.0); // one channel carries half the loudness of two

    write_wav(&mixes.join("mono22k.wav"), &mono, 16, false);
    let src = mixes.join("wav24.wav");
    ffmpeg_convert(
        &src,
        &mixes.join("hires.flac"),
        &[
            "-ar",
            "96000",
            "-metadata",
            "title=Hi Res",
            "-metadata",
            "artist=LoopMind Tests",
        ],
    );
    ffmpeg_convert(&src, &mixes.join("lossy.mp3"), &["-b:a", "192k"]);
    ffmpeg_convert(
        &src,
        &mixes.join("vorbis.ogg"),
        &["-c:a", "libvorbis", "-ar", "48000"],
    );
    ffmpeg_convert(&src, &mixes.join("sixteen.aiff"), &["-c:a", "pcm_s16be"]);
    ffmpeg_convert(
        &src,
        &mixes.join("aac.m4a"),
        &["-c:a", "aac", "-b:a", "192k"],
    );
    ffmpeg_convert(&src, &mixes.join("alac.m4a"), &["-c:a", "alac"]);
    // A FLAC named .wav: the format comes from the bytes.
    ffmpeg_convert(
        &src,
        &mixes.join("really-flac.wav"),
        &["-c:a", "flac", "-f", "flac"],
    );

    let out = dir.path().join("out");
    let targets = TARGETS.iter().map(|t| t.0).collect::<Vec<_>>().join(",");
    let o = loopmind(&[
        "master",
        mixes.to_str().unwrap(),
        "--targets",
        &targets,
        "--out",
        out.to_str().unwrap(),
        "--mode",
        "cinematic",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "loopmind failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("10 tracks: 10 mastered, 0 failed"),
        "{stdout}"
    );

    for track in [
        "wav24",
        "float48",
        "mono22k",
        "hires",
        "lossy",
        "vorbis",
        "sixteen",
        "aac",
        "alac",
        "really-flac",
    ] {
        let tdir = out.join(track);
        let report: TrackReport =
            serde_json::from_slice(&std::fs::read(tdir.join("report.json")).unwrap()).unwrap();
        assert!(tdir.join("master_settings.json").exists());
        let settings = read_json(&tdir.join("master_settings.json"));
        assert_eq!(settings["request"]["mode"], "cinematic");
        for (name, lufs, ceiling) in TARGETS {
            check_master(&tdir, &report, name, lufs, ceiling);
        }
        for f in files_in(&tdir) {
            assert!(
                !f.to_string_lossy().ends_with(".partial"),
                "left behind: {}",
                f.display()
            );
        }
    }
    let hires: TrackReport =
        serde_json::from_slice(&std::fs::read(out.join("hires/report.json")).unwrap()).unwrap();
    assert_eq!(hires.input.sample_rate_hz, 96_000);
    assert_eq!(hires.input.tags.title.as_deref(), Some("Hi Res"));
    let bytes = std::fs::read(out.join("hires/spotify.wav")).unwrap();
    assert!(
        bytes.windows(4).any(|w| w == b"INAM") && bytes.windows(6).any(|w| w == b"Hi Res"),
        "title not in the INFO chunk"
    );
    let mono: TrackReport =
        serde_json::from_slice(&std::fs::read(out.join("mono22k/report.json")).unwrap()).unwrap();
    assert_eq!(mono.input.channels, 1);
}

fn check_master(tdir: &Path, report: &TrackReport, name: &str, lufs: f64, ceiling: f64) {
    let path = tdir.join(format!("{name}.wav"));
    let t = report
        .targets
        .iter()
        .find(|t| t.target == name)
        .expect("target in report");
    // Our own reading of the written file.
    let (audio, info) = decode_file(&path).unwrap();
    let ours = loudness::measure(&audio).unwrap();
    let tp = truepeak::true_peak_dbtp(&audio);
    let ctx = format!("{}", path.display());
    assert!(
        (ours.integrated_lufs - lufs).abs() <= 0.1,
        "{ctx}: {} LUFS",
        ours.integrated_lufs
    );
    assert!(tp <= ceiling, "{ctx}: 16x true peak {tp}");
    assert!(
        ours.true_peak_ebur128_dbtp <= ceiling,
        "{ctx}: ebur128 true peak {}",
        ours.true_peak_ebur128_dbtp
    );
    // The report states what the file measures.
    assert!(
        (t.integrated_lufs - ours.integrated_lufs).abs() < 0.005,
        "{ctx}: report says {}",
        t.integrated_lufs
    );
    assert!(
        (t.true_peak_dbtp - tp).abs() < 0.005,
        "{ctx}: report says {} dBTP",
        t.true_peak_dbtp
    );
    // Our reference reading is the ebur128 crate's, at a fraction of its cost.
    assert!(
        (t.true_peak_bs1770_dbtp - ours.true_peak_ebur128_dbtp).abs() < 0.001,
        "{ctx}: report says {} dBTP by the reference interpolator, ebur128 reads {}",
        t.true_peak_bs1770_dbtp,
        ours.true_peak_ebur128_dbtp
    );
    // Someone else's meter.
    let (ff_i, ff_tp) = ffmpeg_meter(&path);
    assert!(
        (ff_i - lufs).abs() <= 0.1,
        "{ctx}: ffmpeg reads {ff_i} LUFS"
    );
    assert!(ff_tp <= ceiling, "{ctx}: ffmpeg reads {ff_tp} dBTP");
    // Format: the CD preset is 44.1 kHz 16-bit; the others keep the source rate at 24-bit.
    if name == "cd" {
        assert_eq!(
            (info.sample_rate_hz, info.bits_per_sample),
            (44_100, Some(16)),
            "{ctx}"
        );
    } else {
        assert_eq!(info.sample_rate_hz, report.input.sample_rate_hz, "{ctx}");
        assert_eq!(info.bits_per_sample, Some(24), "{ctx}");
    }
    for c in &audio.channels {
        let mean = c.iter().map(|&v| v as f64).sum::<f64>() / c.len() as f64;
        assert!(mean.abs() <= 2.5e-4, "{ctx}: DC offset {mean}");
        assert!(c.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn album_mode_keeps_relative_levels_and_lands_the_album() {
    let dir = tempfile::tempdir().unwrap();
    let mixes = dir.path().join("mixes");
    std::fs::create_dir(&mixes).unwrap();
    let loud = short_song(44_100);
    let mut quiet = loud.clone();
    quiet.scale(0.4); // -7.96 dB
    write_wav(&mixes.join("loud.wav"), &loud, 24, false);
    write_wav(&mixes.join("quiet.wav"), &quiet, 24, false);
    let out = dir.path().join("out");
    let o = loopmind(&[
        "master",
        mixes.to_str().unwrap(),
        "--targets",
        "spotify",
        "--album",
        "LP",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lufs = |t: &str| {
        let (a, _) = decode_file(&out.join(t).join("spotify.wav")).unwrap();
        loudness::measure(&a).unwrap().integrated_lufs
    };
    let (l, q) = (lufs("loud"), lufs("quiet"));
    assert!(((l - q) - 7.96).abs() < 0.15, "album tracks {l} and {q}");
    // Equal lengths: the album's loudness is their mean power.
    let album = 10.0 * ((10f64.powf(l / 10.0) + 10f64.powf(q / 10.0)) / 2.0).log10();
    assert!((album + 14.0).abs() <= 0.1, "album at {album} LUFS");
    assert!(stdout.contains("album LP: 2 tracks"), "{stdout}");
    let r: TrackReport =
        serde_json::from_slice(&std::fs::read(out.join("quiet/report.json")).unwrap()).unwrap();
    assert!(r.album.unwrap().lufs_offset < -5.0);
}

#[test]
fn a_second_run_renders_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mixes = dir.path().join("mixes");
    std::fs::create_dir(&mixes).unwrap();
    let song = short_song(44_100);
    write_wav(&mixes.join("a.wav"), &song, 24, false);
    write_wav(&mixes.join("b.wav"), &song, 16, false);
    let out = dir.path().join("out");
    let run = |targets: &str| succeeded(master_folder(&mixes, &out, targets));
    let mtime = |p: &str| std::fs::metadata(out.join(p)).unwrap().modified().unwrap();
    let first = run("spotify");
    assert!(first.contains("0 already complete"), "{first}");
    let before = (mtime("a/spotify.wav"), mtime("b/spotify.wav"));

    // Unchanged: nothing rendered, and it says why.
    let second = run("spotify");
    assert!(
        second.contains(
            "2 already complete and unchanged (same source and settings: skipped), 0 to render"
        ),
        "{second}"
    );
    assert_eq!(before, (mtime("a/spotify.wav"), mtime("b/spotify.wav")));
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["skipped"], 2, "{summary}");
    assert_eq!(summary["mastered"], 2, "{summary}");

    // A changed mix renders again; the other is still skipped.
    let mut quieter = short_song(44_100);
    quieter.scale(0.5);
    write_wav(&mixes.join("b.wav"), &quieter, 16, false);
    let third = run("spotify");
    assert!(third.contains("1 already complete"), "{third}");
    assert!(third.contains("1 to render"), "{third}");
    assert_eq!(before.0, mtime("a/spotify.wav"));
    assert_ne!(before.1, mtime("b/spotify.wav"));

    // Other settings: everything renders.
    let fourth = run("spotify,cd");
    assert!(fourth.contains("0 already complete"), "{fourth}");
    assert!(out.join("a/cd.wav").exists());
}

/// Resume knows content, not timestamps: a mix restored with its old size
/// and time (`cp -p`, `rsync -t`), a changed arrangement beside it and a
/// master removed since each render their track again.
#[test]
fn resume_is_not_fooled_by_a_restore_a_document_or_a_missing_master() {
    let dir = tempfile::tempdir().unwrap();
    let mixes = dir.path().join("mixes");
    std::fs::create_dir(&mixes).unwrap();
    let song = short_song(44_100);
    for t in ["a", "b", "c", "d"] {
        write_wav(&mixes.join(format!("{t}.wav")), &song, 16, false);
    }
    let arrangement = |end: f64| {
        format!(
            r#"{{"structure": [{{"section": "verse", "start": 0.0, "end": {end}}},
                {{"section": "chorus", "start": {end}, "end": 18.0}}]}}"#
        )
    };
    let doc = mixes.join("c.arrangement.json");
    std::fs::write(&doc, arrangement(4.0)).unwrap();
    let out = dir.path().join("out");
    let run = || succeeded(master_folder(&mixes, &out, "spotify"));
    let first = run();
    assert!(first.contains("0 already complete"), "{first}");
    let mtime = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let rendered = |t: &str| mtime(&out.join(t).join("spotify.wav"));
    let before: Vec<_> = ["a", "b", "c", "d"].map(rendered).to_vec();

    // a: other samples, same size, its old modification time put back.
    let a = mixes.join("a.wav");
    let was = mtime(&a);
    let mut other = short_song(44_100);
    other.scale(0.5);
    write_wav(&a, &other, 16, false);
    std::fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(was)
        .unwrap();
    assert_eq!(mtime(&a), was);
    // b: its master removed. c: its arrangement changed. d: untouched.
    std::fs::remove_file(out.join("b/spotify.wav")).unwrap();
    std::fs::write(&doc, arrangement(5.0)).unwrap();
    let second = run();
    assert!(
        second.contains("1 already complete") && second.contains("3 to render"),
        "{second}"
    );
    let after: Vec<_> = ["a", "b", "c", "d"].map(rendered).to_vec();
    for (i, t) in ["a", "b", "c"].iter().enumerate() {
        assert_ne!(before[i], after[i], "{t} was not rendered again");
    }
    assert_eq!(before[3], after[3], "d was rendered again");
}

#[test]
fn a_second_run_on_the_same_folder_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mixes = dir.path().join("mixes");
    std::fs::create_dir(&mixes).unwrap();
    for i in 0..4 {
        write_wav(
            &mixes.join(format!("s{i}.wav")),
            &short_song(48_000),
            24,
            false,
        );
    }
    let out = dir.path().join("out");
    let args = |o: &Path| {
        vec![
            "master".to_string(),
            mixes.display().to_string(),
            "--out".into(),
            o.display().to_string(),
            "--targets".into(),
            "spotify,apple-music,youtube,cd".into(),
            "--jobs".into(),
            "1".into(),
        ]
    };
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_loopmind"))
        .args(args(&out))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !out.join("running.json").exists() && t0.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        out.join("running.json").exists(),
        "the first run never started"
    );
    let a: Vec<String> = args(&out);
    let second = loopmind(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(
        err.contains("another `loopmind master` is writing to"),
        "{err}"
    );
    assert!(err.contains(&format!("\"pid\":{}", first.id())), "{err}");
    assert!(first.wait().unwrap().success());
    assert!(!out.join("running.json").exists());
}

/// Run fencing through the CLI: while a newer run holds a track's claim (a
/// claim planted as a run far in the future would leave it), this run
/// neither replaces the track's masters with a changed mix nor, when its try
/// fails, deletes them; once the claim is gone, the changed mix renders.
#[test]
fn an_older_run_never_replaces_or_deletes_a_newer_runs_masters() {
    let dir = tempfile::tempdir().unwrap();
    let mixes = dir.path().join("mixes");
    std::fs::create_dir(&mixes).unwrap();
    let song = short_song(44_100);
    write_wav(&mixes.join("a.wav"), &song, 16, false);
    let out = dir.path().join("out");
    // Some of these runs fail a track (exit 1): their output is read as is.
    let run =
        || String::from_utf8_lossy(&master_folder(&mixes, &out, "spotify").stdout).to_string();
    let first = run();
    assert!(first.contains("1 mastered"), "{first}");
    let files =
        |t: &str| ["spotify.wav", "report.json"].map(|f| std::fs::read(out.join(t).join(f)).ok());
    let kept = files("a");
    assert!(kept.iter().all(Option::is_some));

    // A newer run holds the track (run ids are time-ordered hex).
    let claims = out.join(".loopmind-claims/a");
    assert_eq!(
        std::fs::read_dir(&claims).unwrap().count(),
        1,
        "the first run staked no claim"
    );
    let claim = claims.join("fffffffffffffffffffffff.000000000000.other.json");
    std::fs::write(
        &claim,
        r#"{"run": "fffffffffffffffffffffff", "attempt": "other"}"#,
    )
    .unwrap();
    // The mix changes: this run must not replace the newer run's master.
    let mut quieter = short_song(44_100);
    quieter.scale(0.5);
    write_wav(&mixes.join("a.wav"), &quieter, 16, false);
    let second = run();
    assert!(second.contains("superseded by the newer run"), "{second}");
    assert_eq!(
        files("a"),
        kept,
        "an older run replaced a newer run's outputs"
    );
    // The mix breaks: this run's failed try must not delete them either.
    std::fs::write(mixes.join("a.wav"), b"RIFF\0\0\0\0WAVEjunk").unwrap();
    let third = run();
    assert!(third.contains("1 failed"), "{third}");
    assert_eq!(
        files("a"),
        kept,
        "a failed try deleted another run's outputs"
    );
    assert!(!out.join("a/error.json").exists());

    // The newer run is gone: this run renders the changed mix.
    std::fs::remove_file(&claim).unwrap();
    write_wav(&mixes.join("a.wav"), &quieter, 16, false);
    let fourth = run();
    assert!(fourth.contains("1 mastered"), "{fourth}");
    assert_ne!(files("a")[0], kept[0]);
}

/// A loud target its codec's ceiling leaves short (-6.5 LUFS under -1 dBTP
/// once its Opus deliverable is checked, radio-loud): within the request's
/// tolerance it ships at the loudness reachable, said per target and in the
/// summary, its loudness on the aim; beyond it the master is withheld. Each
/// renders again from its own master_settings.json to the same outcome.
#[test]
fn a_master_short_of_its_loudness_ships_within_the_tolerance_and_renders_again() {
    let dir = tempfile::tempdir().unwrap();
    // The demo song (`loopmind demo`'s).
    let (song, _) = loopmind_dsp::testsignals::song(
        44_100,
        &loopmind_dsp::testsignals::demo_arrangement(),
        2026,
    );
    let mix = dir.path().join("loud.wav");
    write_wav(&mix, &song, 24, false);
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "master",
            mix.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--formats",
            "opus",
        ];
        args.extend_from_slice(extra);
        loopmind(&args)
    };
    let first = ["--lufs", "-6.5", "--ceiling", "-1", "--mode", "radio-loud"];
    let report = |out: &Path| -> TrackReport {
        serde_json::from_slice(&std::fs::read(out.join("loud/report.json")).unwrap()).unwrap()
    };

    // Within a tolerance of 1.5 LU: shipped short.
    let short = dir.path().join("short");
    let text = succeeded(run(
        &short,
        &[&first[..], &["--shortfall-tolerance", "1.5"]].concat(),
    ));
    let r = report(&short);
    let t = &r.targets[0];
    let s = t.short.expect("shipped short");
    assert!(t.withheld.is_none());
    assert!(s.short_lu > 0.5 && s.short_lu <= 1.5, "{s:?}");
    assert!((s.aimed_lufs - (-6.5 - s.short_lu)).abs() < 1e-9);
    assert!(
        text.contains("SHORT by") && text.contains("1 masters shipped short"),
        "{text}"
    );
    let wav = short.join("loud").join(&t.output_file);
    let (lufs, _) = ffmpeg_meter(&wav);
    assert!((lufs - s.aimed_lufs).abs() <= 0.1, "{lufs} against {s:?}");
    assert!(
        t.codecs.iter().all(|c| !c.over(t.ceiling_dbtp)),
        "{:?}",
        t.codecs
    );
    let summary = read_json(&short.join("summary.json"));
    assert_eq!(summary["short"], 1);

    // The default tolerance (0.5 LU): withheld, saying why.
    let withheld = dir.path().join("withheld");
    let o = run(&withheld, &first);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let w = report(&withheld);
    let why = w.targets[0].withheld.clone().expect("withheld");
    assert!(why.contains("0.5 LU the request tolerates"), "{why}");
    assert!(!withheld
        .join("loud")
        .join(&w.targets[0].output_file)
        .exists());

    // Each renders again from its settings to the same outcome.
    for (from, shipped) in [(&short, true), (&withheld, false)] {
        let again = dir.path().join(format!("again-{shipped}"));
        let settings = from.join("loud/master_settings.json");
        let o = run(&again, &["--settings", settings.to_str().unwrap()]);
        assert_eq!(
            o.status.success(),
            shipped,
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        let (a, b) = (report(from), report(&again));
        assert_eq!(a.targets[0].short, b.targets[0].short);
        assert_eq!(a.targets[0].withheld, b.targets[0].withheld);
        let name = &a.targets[0].output_file;
        if shipped {
            let bytes = |d: &Path| std::fs::read(d.join("loud").join(name)).unwrap();
            assert!(bytes(from) == bytes(&again), "the master differs");
        }
    }
}

/// `loopmind master MIXES --out OUT --targets TARGETS`.
fn master_folder(mixes: &Path, out: &Path, targets: &str) -> std::process::Output {
    loopmind(&[
        "master",
        mixes.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--targets",
        targets,
    ])
}

/// A run's stdout, once it exited 0 (its output shown if not).
fn succeeded(o: std::process::Output) -> String {
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    text
}
