//! `--reference`: the master takes on a reference track's tonal balance,
//! within limits, and the plan that did it renders again bit for bit.

mod common;

use common::*;
use loopmind_dsp::biquad::{run_cascade, Coeffs};
use loopmind_dsp::reference::{balance, Balance, MAX_MATCH_DB};
use loopmind_dsp::testsignals::{demo_arrangement, song};
use loopmind_worker::report::{MasterSettings, TrackReport};
use std::path::Path;

/// Band levels relative to the 1 kHz band, 63 Hz .. 8 kHz.
fn tilt(b: &Balance) -> Vec<f64> {
    (1..9)
        .map(|k| b.bands_db[k].unwrap() - b.bands_db[5].unwrap())
        .collect()
}

fn rms_distance(a: &[f64], b: &[f64]) -> f64 {
    (a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64).sqrt()
}

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

    let want = tilt(&balance(&reference));
    let before = rms_distance(&tilt(&balance_of(&plain_dir.join("spotify.wav"))), &want);
    let after = rms_distance(&tilt(&balance_of(&matched_dir.join("spotify.wav"))), &want);
    assert!(before > 2.0, "the reference differs: {before:.2} dB");
    assert!(
        after < 0.4 * before,
        "balance {before:.2} dB from the reference before, {after:.2} after"
    );
    assert!(s
        .global
        .match_eq
        .iter()
        .all(|b| b.gain_db.abs() <= MAX_MATCH_DB));
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
