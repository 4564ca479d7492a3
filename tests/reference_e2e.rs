//! `--reference`: the master takes on a reference track's tonal balance,
//! within limits, and the plan that did it renders again bit for bit.

mod common;

use common::*;
use loopmind_dsp::analysis::reference::{balance, distance_db, Balance, MAX_MATCH_DB};
use loopmind_dsp::biquad::{run_cascade, Coeffs};
use loopmind_dsp::testsignals::{demo_arrangement, song};
use loopmind_worker::report::{MasterSettings, TrackReport};
use std::path::Path;

fn balance_of(path: &Path) -> Balance {
    balance(&loopmind_worker::decode::decode_file(path).unwrap().0)
}

#[test]
fn reference_moves_the_tonal_balance_towards_it() {
    let dir = tempfile::tempdir().unwrap();
    let rate = 44_100;
    let (mix, _) = song(rate, &demo_arrangement(), 21);
    let mix_path = dir.path().join("song.wav");
    write_wav(&mix_path, &mix, 24, false);
    // The reference: another take of the song, brighter and leaner.
    let (mut reference, _) = song(rate, &demo_arrangement(), 22);
    let shape = [
        Coeffs::high_shelf(4000.0, 5.0, rate as f64),
        Coeffs::low_shelf(120.0, -3.0, rate as f64),
    ];
    for c in &mut reference.channels {
        run_cascade(&shape, c);
    }
    let ref_path = dir.path().join("reference.wav");
    write_wav(&ref_path, &reference, 24, false);

    let run = |tag: &str, extra: &[&str]| {
        let out = dir.path().join(tag);
        let mut args = vec![
            "master",
            mix_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = loopmind(&args);
        assert!(
            o.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let t = out.join("song");
        let r: TrackReport =
            serde_json::from_slice(&std::fs::read(t.join("report.json")).unwrap()).unwrap();
        let s: MasterSettings =
            serde_json::from_slice(&std::fs::read(t.join("master_settings.json")).unwrap())
                .unwrap();
        (r, s, t)
    };
    // The codec check off: under enforce a master over its ceiling after
    // Vorbis is limited deeper, which moves its balance too (tested apart,
    // worker/tests/codec.rs); this measures what the reference does.
    let target = [
        "--targets",
        "spotify",
        "--mode",
        "transparent",
        "--codec-check",
        "off",
    ];
    let (_, plain, plain_dir) = run("plain", &target);
    assert!(plain.global.match_eq.is_empty() && plain.reference.is_none());
    let with_ref = [&target[..], &["--reference", ref_path.to_str().unwrap()]].concat();
    let (r, s, matched_dir) = run("matched", &with_ref);

    let want = balance(&reference);
    let distance = |dir: &Path| {
        distance_db(&balance_of(&dir.join("spotify.wav")), &want, |_| 0.0, rate).unwrap()
    };
    let (before, after) = (distance(&plain_dir), distance(&matched_dir));
    assert!(before > 1.5, "the reference differs: {before:.2} dB");
    // Half the way at least: an 8 dB tilt is more than the match's limits
    // (2 dB between octaves, 2.5 dB RMS) will follow.
    assert!(
        after < 0.5 * before,
        "balance {before:.2} dB from the reference before, {after:.2} after"
    );
    assert!(s
        .global
        .match_eq
        .iter()
        .all(|b| b.gain_db.abs() <= MAX_MATCH_DB));
    // report.json says how close the match came, as the masters show it,
    // and the applied curve moves neighbouring octaves by 2.5 dB at most.
    let info = r.reference.as_ref().expect("reference in report.json");
    let (b, a) = (
        info.distance_before_db.unwrap(),
        info.distance_after_db.unwrap(),
    );
    assert!(
        (b - before).abs() < 0.5 && (a - after).abs() < 0.5 && a < b,
        "reported {b:.2} -> {a:.2} dB, measured {before:.2} -> {after:.2}"
    );
    assert!(
        info.applied_curve
            .windows(2)
            .all(|w| (w[1].gain_db - w[0].gain_db).abs() <= 2.5),
        "{:?}",
        info.applied_curve
    );
    let info = s.reference.as_ref().expect("reference block");
    assert!(info.source.ends_with("reference.wav"));
    assert!((r.targets[0].integrated_lufs + 14.0).abs() <= 0.1);
    assert!(r.targets[0].true_peak_dbtp <= -1.0);

    // The plan (match EQ included) renders again bit for bit, no reference needed.
    let settings = matched_dir.join("master_settings.json");
    let (_, again, again_dir) = run("again", &["--settings", settings.to_str().unwrap()]);
    assert_eq!(again.global, s.global);
    assert!(
        std::fs::read(again_dir.join("spotify.wav")).unwrap()
            == std::fs::read(matched_dir.join("spotify.wav")).unwrap(),
        "the re-render differs"
    );

    // An undecodable reference fails the track, naming the reference.
    let junk = dir.path().join("junk.wav");
    std::fs::write(&junk, b"not audio at all, just text").unwrap();
    let out = dir.path().join("junk-out");
    let o = loopmind(&[
        "master",
        mix_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--targets",
        "spotify",
        "--reference",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = read_json(&out.join("song/error.json"));
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.contains("reference") && msg.contains("junk.wav"),
        "{msg}"
    );
    assert!(!out.join("song/spotify.wav").exists());
}
