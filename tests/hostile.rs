//! Hostile input at catalog scale: headers that lie, files that decode to
//! more than the limits allow, digital silence and tiny sections, documents
//! that point past the track, names that would climb out of `--out`, and
//! renders that crash, hang or outgrow their memory budget. Each costs its
//! own track (an error.json naming the problem), never the batch; every
//! document LoopMind writes reads back into LoopMind.

mod common;

use common::hostile::*;
use common::*;
use loopmind_dsp::testsignals::sine;
use loopmind_worker::report::{MasterSettings, TrackReport};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn master(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loopmind"))
        .arg("master")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run loopmind")
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The error a failed track's error.json gives.
fn error_of(out: &Path, track: &str) -> String {
    let e = read_json(&out.join(track).join("error.json"));
    e["error"].as_str().unwrap().to_string()
}

fn everything_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(everything_under(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn a_hostile_batch_finishes_and_every_track_is_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    let mixes = dir.path().join("mixes");
    std::fs::create_dir(&mixes).unwrap();
    let good = mixes.join("good.wav");
    write_wav(&good, &short_song(44_100), 24, false);
    lying_flac(&good, &mixes.join("lying-flac.flac"));
    lying_mp3(&good, &mixes.join("lying-mp3.mp3"));
    // 30 s of tone compresses to almost nothing; the limit here is 20 s.
    write_wav(
        &mixes.join("long.wav"),
        &sine(44_100, 30.0, 220.0, -12.0, 0.0),
        16,
        false,
    );
    // The same through libopus (its own decoder, the same limits), and an
    // Opus stream of six channels (mapping family 1), which is refused by
    // name like any other surround file.
    ffmpeg_convert(
        &mixes.join("long.wav"),
        &mixes.join("long-opus.opus"),
        &["-c:a", "libopus", "-b:a", "64k"],
    );
    ffmpeg_convert(
        &good,
        &mixes.join("surround.opus"),
        &["-c:a", "libopus", "-ac", "6", "-mapping_family", "1"],
    );
    // Silence inside, a 0.2 s section and an all-silent one.
    write_wav(&mixes.join("silences.wav"), &song_with_silence(), 24, false);
    std::fs::write(
        mixes.join("silences.arrangement.json"),
        SILENCES_ARRANGEMENT,
    )
    .unwrap();
    // The last section starts after the track's end (18 s).
    write_wav(&mixes.join("late.wav"), &short_song(44_100), 24, false);
    std::fs::write(
        mixes.join("late.arrangement.json"),
        r#"{"structure": [
            {"section": "verse", "start": 0.0, "end": 10.0},
            {"section": "outro", "start": 18.2, "end": 18.3}]}"#,
    )
    .unwrap();
    // Its stem is `..`: named explicitly (a folder walk skips dot files).
    let dots = dir.path().join("...wav");
    std::fs::copy(&good, &dots).unwrap();

    let out = dir.path().join("out").join("masters");
    let o = master(
        &[
            mixes.to_str().unwrap(),
            dots.to_str().unwrap(),
            "--targets",
            "spotify,ebu-r128",
            "--out",
            out.to_str().unwrap(),
            "--mode",
            "cinematic",
        ],
        &[("LOOPMIND_RENDER__MAX_DURATION_S", "20")],
    );
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("9 tracks: 3 mastered, 6 failed"), "{log}");

    for t in ["good", "silences", "__"] {
        assert!(out.join(t).join("spotify.wav").is_file(), "{t}: {log}");
        // Typed read-back of what was written.
        let r: TrackReport =
            serde_json::from_slice(&std::fs::read(out.join(t).join("report.json")).unwrap())
                .unwrap_or_else(|e| panic!("{t}: report.json does not read back: {e}"));
        assert_eq!(r.targets.len(), 2);
    }
    for (track, want) in [
        ("lying-flac", "the header promises"),
        ("lying-mp3", "the header promises"),
        ("long", "over the limit of 20 s (render.max_duration_s)"),
        (
            "long-opus",
            "over the limit of 20 s (render.max_duration_s)",
        ),
        ("surround", "mono and stereo"),
        (
            "late",
            "arrangement: structure[1].start: 18.2 is beyond the track's end",
        ),
    ] {
        let e = error_of(&out, track);
        assert!(e.contains(want), "{track}: {e}");
        assert_eq!(
            files_in(&out.join(track)).len(),
            1,
            "{track}: only error.json"
        );
    }
    // Nothing outside --out: its parent holds only it.
    assert_eq!(
        files_in(&dir.path().join("out")),
        vec![out.clone()],
        "something was written beside --out"
    );

    // The silent spans are null in the documents and read back as -inf.
    let silences = out.join("silences");
    let settings_path = silences.join("master_settings.json");
    let settings: MasterSettings =
        serde_json::from_slice(&std::fs::read(&settings_path).unwrap()).unwrap();
    let gap = &settings.sections[2];
    assert_eq!(gap.section, "gap");
    assert_eq!(gap.input_lufs, f64::NEG_INFINITY);
    let blip = &settings.sections[1];
    assert_eq!(
        blip.input_lufs,
        f64::NEG_INFINITY,
        "0.2 s is under one block"
    );
    let raw = read_json(&silences.join("report.json"));
    assert!(raw["targets"][0]["sections"][2]["output_lufs"].is_null());

    // The settings render again, bit for bit.
    let again = dir.path().join("out").join("again");
    let o = master(
        &[
            mixes.join("silences.wav").to_str().unwrap(),
            "--settings",
            settings_path.to_str().unwrap(),
            "--out",
            again.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for t in ["spotify.wav", "ebu-r128.wav"] {
        assert_eq!(
            std::fs::read(silences.join(t)).unwrap(),
            std::fs::read(again.join("silences").join(t)).unwrap(),
            "{t} differs after --settings"
        );
    }

    // A settings file whose target name climbs out is refused whole.
    let mut doc = read_json(&settings_path);
    doc["targets"][0]["target"] = "../../escaped".into();
    let evil = dir.path().join("evil_settings.json");
    std::fs::write(&evil, serde_json::to_vec(&doc).unwrap()).unwrap();
    let before = everything_under(dir.path()).len();
    let o = master(
        &[
            mixes.join("silences.wav").to_str().unwrap(),
            "--settings",
            evil.to_str().unwrap(),
            "--out",
            dir.path().join("out").join("evil").to_str().unwrap(),
        ],
        &[],
    );
    let log = text(&o);
    assert_eq!(o.status.code(), Some(2), "{log}");
    assert!(
        log.contains("target name") && log.contains("escaped"),
        "{log}"
    );
    assert!(!dir.path().join("escaped.wav").exists());
    assert!(everything_under(dir.path()).len() <= before + 1, "{log}");
}

/// Runs `loopmind master` and, while it runs, does `to_child` to each render
/// child it starts once `ready` holds; returns its output.
fn master_with(
    args: &[&str],
    env: &[(&str, &str)],
    ready: impl Fn() -> bool,
    to_child: impl Fn(u32),
) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loopmind"))
        .arg("master")
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut seen = std::collections::HashSet::new();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "loopmind hung"
        );
        if ready() {
            let kids = Command::new("pgrep")
                .args(["-P", &child.id().to_string(), "-f", "render-child"])
                .output()
                .unwrap();
            for pid in String::from_utf8_lossy(&kids.stdout).split_whitespace() {
                let pid: u32 = pid.parse().unwrap();
                if seen.insert(pid) {
                    to_child(pid);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

#[test]
fn a_crash_costs_its_track_and_a_second_crash_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let mixes = dir.path().join("mixes");
    std::fs::create_dir(&mixes).unwrap();
    write_wav(&mixes.join("a-good.wav"), &short_song(44_100), 24, false);
    long_flac(&mixes.join("b-long.flac"));
    let out = dir.path().join("out");
    let good_done = out.join("a-good/report.json");
    let o = master_with(
        &[
            mixes.to_str().unwrap(),
            "--targets",
            "spotify,apple-music,cd",
            "--out",
            out.to_str().unwrap(),
            "--jobs",
            "1",
        ],
        &[],
        || good_done.exists(),
        // SIGABRT, as a C library's failed assertion sends. (Not SIGSEGV:
        // Rust's stack-overflow handler swallows the first one sent by kill.)
        |pid| signal(pid, "ABRT"),
    );
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(out.join("a-good/spotify.wav").is_file(), "{log}");
    let e = error_of(&out, "b-long");
    assert!(e.contains("crashed (signal 6: SIGABRT) while"), "{e}");
    assert!(e.contains("twice"), "{e}");
    assert_eq!(read_json(&out.join("b-long/error.json"))["action"], "abort");
}

#[test]
fn a_stuck_render_is_stopped_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let mixes = dir.path().join("mixes");
    std::fs::create_dir(&mixes).unwrap();
    long_flac(&mixes.join("long.flac"));
    let out = dir.path().join("out");
    let started = Instant::now();
    // SIGSTOP: the child stays alive and says nothing, like a decoder in a loop.
    let o = master_with(
        &[
            mixes.to_str().unwrap(),
            "--targets",
            "spotify",
            "--out",
            out.to_str().unwrap(),
        ],
        &[("LOOPMIND_RENDER__STALL_S", "2")],
        || true,
        |pid| signal(pid, "STOP"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = error_of(&out, "long");
    assert!(
        e.contains("no progress for 2 s (render.stall_s) while"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn deadline_and_memory_budget_are_enforced_per_track() {
    let dir = tempfile::tempdir().unwrap();
    let mixes = dir.path().join("mixes");
    std::fs::create_dir(&mixes).unwrap();
    write_wav(&mixes.join("good.wav"), &short_song(44_100), 24, false);
    long_flac(&mixes.join("long.flac"));
    let args = |out: &Path| {
        vec![
            mixes.to_str().unwrap().to_string(),
            "--targets".into(),
            "spotify,apple-music".into(),
            "--out".into(),
            out.to_str().unwrap().to_string(),
        ]
    };
    // The render streams, so length no longer costs memory; what a file
    // still controls is its rate: the 30 s A/B clips of a 192 kHz track hold
    // about 100 MB, over a 96 MiB budget that a 44.1 kHz song fits in.
    tone_flac(&mixes.join("hires.flac"), 192_000, 40.0);
    let out = dir.path().join("budget");
    let a = args(&out);
    let o = master(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("LOOPMIND_RENDER__MEMORY_BUDGET_MIB", "96")],
    );
    let log = text(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(out.join("good/spotify.wav").is_file(), "{log}");
    assert!(
        out.join("long/spotify.wav").is_file(),
        "a 4-minute track fits: {log}"
    );
    let e = error_of(&out, "hires");
    assert!(
        e.contains("ran out of its 96 MiB memory budget (render.memory_budget_mib) while"),
        "{e}"
    );
    assert_eq!(read_json(&out.join("hires/error.json"))["action"], "abort");
    std::fs::remove_file(mixes.join("hires.flac")).unwrap();

    let out = dir.path().join("deadline");
    let a = args(&out);
    let o = master(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("LOOPMIND_RENDER__DEADLINE_S", "1")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = error_of(&out, "long");
    assert!(
        e.contains("took longer than its 1 s deadline (render.deadline_s) while"),
        "{e}"
    );
}
