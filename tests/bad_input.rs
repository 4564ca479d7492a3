//! Unusable inputs: each gets a clear error naming the file and the reason,
//! in the summary and in error.json; the good track beside them still
//! masters; nothing panics; no master is left where a reader could find it.

mod common;

use common::*;
use loopmind_dsp::testsignals::sine;
use loopmind_dsp::Audio;

#[test]
fn every_bad_input_fails_alone_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mixes = dir.path().join("mixes");
    std::fs::create_dir(&mixes).unwrap();
    let good = short_song(44_100);
    write_wav(&mixes.join("good.wav"), &good, 24, false);

    std::fs::write(mixes.join("empty.wav"), b"").unwrap();
    let mut noise = loopmind_dsp::testsignals::Noise::new(5);
    let random: Vec<u8> = (0..50_000)
        .map(|_| (noise.sample() * 127.0 + 128.0) as u8)
        .collect();
    std::fs::write(mixes.join("random.wav"), random).unwrap();
    std::fs::write(
        mixes.join("text.mp3"),
        "this is not audio, just words\n".repeat(100),
    )
    .unwrap();
    let whole = std::fs::read(mixes.join("good.wav")).unwrap();
    std::fs::write(mixes.join("truncated.wav"), &whole[..whole.len() / 3]).unwrap();
    ffmpeg_convert(
        &mixes.join("good.wav"),
        &mixes.join("opus.ogg"),
        &["-c:a", "libopus"],
    );
    let mut nan = sine(44_100, 3.0, 440.0, -10.0, 0.0);
    nan.channels[1][44_100] = f32::NAN;
    write_wav(&mixes.join("nan.wav"), &nan, 32, true);
    write_wav(
        &mixes.join("single.wav"),
        &Audio::new(44_100, vec![vec![0.5]]).unwrap(),
        16,
        false,
    );
    write_wav(
        &mixes.join("short.wav"),
        &sine(44_100, 0.3, 440.0, -10.0, 0.0),
        16,
        false,
    );
    write_wav(
        &mixes.join("silence.wav"),
        &Audio::new(44_100, vec![vec![0.0; 220_500]; 2]).unwrap(),
        16,
        false,
    );

    let out = dir.path().join("out");
    let o = loopmind(&[
        "master",
        mixes.to_str().unwrap(),
        "--targets",
        "spotify,ebu-r128",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "exit code must say a track failed:\n{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stdout.contains("10 tracks: 2 mastered, 8 failed"),
        "{stdout}"
    );
    // Ogg Opus decodes (libopus), as every other lossy input.
    assert!(out.join("opus/spotify.wav").is_file(), "{stdout}");
    assert!(out.join("good/report.json").exists());
    assert!(out.join("summary.html").exists());
    assert!(
        !out.join(".loopmind-scratch").exists(),
        "scratch left behind"
    );
    assert!(out.join("good/spotify.wav").exists() && out.join("good/ebu-r128.wav").exists());

    let expect = [
        ("empty", "empty file"),
        ("random", "not a recognised audio file"),
        ("text", "not a recognised audio file"),
        ("truncated", "truncated"),
        ("nan", "non-finite sample"),
        ("single", "too short"),
        ("short", "too short"),
        ("silence", "silent"),
    ];
    let summary = read_json(&out.join("summary.json"));
    for (track, reason) in expect {
        let tdir = out.join(track);
        let err = read_json(&tdir.join("error.json"));
        let msg = err["error"].as_str().unwrap();
        assert!(
            msg.contains(reason),
            "{track}: error.json says '{msg}', want '{reason}'"
        );
        assert_eq!(
            err["action"], "abort",
            "{track}: bad input is not worth retrying"
        );
        assert!(err["source"].as_str().unwrap().contains(track));
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{track}  FAILED")))
            .unwrap_or_else(|| panic!("{track} not in summary:\n{stdout}"));
        assert!(line.contains(reason) && line.contains(track), "{line}");
        let entry = summary["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["track"] == track)
            .unwrap();
        assert!(entry["error"].as_str().unwrap().contains(reason));
        // Nothing that could pass for a master or a finished report.
        for f in files_in(&tdir) {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            assert_eq!(name, "error.json", "{track}: left {name} behind");
        }
    }
}

/// A NUL (or another control character) in a tag is a file's quirk, not
/// a failure: the track masters with the tag cleaned, through the Vorbis
/// encoder that refuses a NUL.
#[test]
fn a_nul_in_a_tag_does_not_fail_the_track() {
    let dir = tempfile::tempdir().unwrap();
    let mixes = dir.path().join("mixes");
    std::fs::create_dir(&mixes).unwrap();
    write_wav(&mixes.join("src.wav"), &short_song(44_100), 24, false);
    let flac = mixes.join("t.flac");
    ffmpeg_convert(
        &mixes.join("src.wav"),
        &flac,
        &["-metadata", "title=BeforeXAfter"],
    );
    std::fs::remove_file(mixes.join("src.wav")).unwrap();
    // The comment's length prefix stays right: one byte for one byte.
    let mut bytes = std::fs::read(&flac).unwrap();
    let at = bytes
        .windows(12)
        .position(|w| w == b"BeforeXAfter")
        .unwrap();
    bytes[at + 6] = 0;
    std::fs::write(&flac, bytes).unwrap();
    let out = dir.path().join("out");
    let run = loopmind(&[
        "master",
        mixes.to_str().unwrap(),
        "--targets",
        "spotify",
        "--out",
        out.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{said}");
    assert!(!out.join("t/error.json").exists(), "{said}");
    let report = read_json(&out.join("t/report.json"));
    assert_eq!(report["input"]["tags"]["title"], "Before After", "{said}");
}

/// A folder holding what no mix should be: a FIFO, a link to a device, a
/// link out of the folder, a link loop, a 50 MB arrangement and two tracks
/// longer than the job's disk budget (one stating its length, one, a
/// streamed FLAC, not: it is stopped as its files grow). Each bad entry is
/// its own track's named error; the good tracks are mastered, a link
/// inside the folder is followed, the loop is walked once.
#[test]
fn a_folder_of_strange_entries_masters_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mixes = dir.path().join("mixes");
    std::fs::create_dir_all(mixes.join("sub")).unwrap();
    write_wav(&mixes.join("good.wav"), &short_song(44_100), 24, false);
    let elsewhere = dir.path().join("elsewhere.wav");
    write_wav(&elsewhere, &short_song(44_100), 16, false);
    let made = std::process::Command::new("mkfifo")
        .arg(mixes.join("pipe.wav"))
        .status()
        .unwrap();
    assert!(made.success());
    let link = |to: &std::path::Path, at: &str| std::os::unix::fs::symlink(to, mixes.join(at));
    link("/dev/zero".as_ref(), "zero.wav").unwrap();
    link(&elsewhere, "outside.wav").unwrap();
    link(&mixes.join("good.wav"), "sub/inner.wav").unwrap();
    link(&mixes, "sub/loop").unwrap();
    write_wav(&mixes.join("big.wav"), &short_song(44_100), 16, false);
    let doc = std::fs::File::create(mixes.join("big.arrangement.json")).unwrap();
    doc.set_len(50 << 20).unwrap();
    // 60 s needs about 90 MB (mix, scratch, a master): over a 40 MiB budget;
    // the 18 s songs need about 29 MB.
    let long = dir.path().join("long.wav");
    let song = short_song(44_100);
    let minute: Vec<Vec<f32>> = song.channels.iter().map(|c| c.repeat(4)).collect();
    write_wav(&long, &Audio::new(44_100, minute).unwrap(), 16, false);
    std::fs::copy(&long, mixes.join("long.wav")).unwrap();
    // Piped, ffmpeg cannot go back to write the FLAC's length: none stated.
    let streamed = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&long)
        .args(["-f", "flac", "pipe:1"])
        .output()
        .unwrap();
    assert!(streamed.status.success());
    std::fs::write(mixes.join("streamed.flac"), &streamed.stdout).unwrap();

    let out = dir.path().join("out");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_loopmind"))
        .args([
            "master",
            mixes.to_str().unwrap(),
            "--targets",
            "spotify",
            "--out",
        ])
        .arg(&out)
        .env("LOOPMIND_RENDER__DISK_BUDGET_MIB", "40")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{said}\n{stderr}");
    let summary = read_json(&out.join("summary.json"));
    let tracks = summary["tracks"].as_array().unwrap();
    let names: Vec<&str> = tracks
        .iter()
        .map(|t| t["track"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["big", "good", "inner", "long", "outside", "pipe", "streamed", "zero"],
        "the loop walked once: {said}"
    );
    let error = |track: &str| {
        let t = tracks.iter().find(|t| t["track"] == track).unwrap();
        t["error"].as_str().map(str::to_string)
    };
    assert_eq!(error("good"), None, "{said}");
    assert_eq!(error("inner"), None, "a link inside the folder is followed");
    for (track, why) in [
        ("pipe", "a FIFO, not a regular file"),
        ("zero", "outside the input folder"),
        ("outside", "outside the input folder"),
        ("big", "render.max_document_kib"),
        ("long", "render.disk_budget_mib"),
        ("streamed", "render.disk_budget_mib"),
    ] {
        let e = error(track).unwrap_or_else(|| panic!("{track} mastered: {said}"));
        assert!(e.contains(why), "{track}: {e}");
        assert!(!out.join(track).join("spotify.wav").exists(), "{track}");
    }
    assert!(out.join("good/spotify.wav").exists() && out.join("inner/spotify.wav").exists());
    let written: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.') && !n.starts_with("summary"))
        .collect();
    assert!(
        written.iter().all(|n| names.contains(&n.as_str())),
        "{written:?}"
    );
}
