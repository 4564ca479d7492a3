//! Section-aware mastering through `loopmind master`: detected or given
//! sections, the plan per mode, the report's per-section loudness.

mod common;

use common::*;
use loopmind_dsp::testsignals::{demo_arrangement, song};
use loopmind_worker::report::{MasterSettings, TrackReport};
use std::path::Path;

fn master(
    dir: &Path,
    mix: &Path,
    tag: &str,
    extra: &[&str],
) -> (TrackReport, MasterSettings, String) {
    let out = dir.join(tag);
    let mut args = vec![
        "master",
        mix.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = loopmind(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let t = out.join("song");
    let report = std::fs::read(t.join("report.json"))
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or_else(|_| panic!("{tag}: no report:\n{text}"));
    let settings =
        serde_json::from_slice(&std::fs::read(t.join("master_settings.json")).unwrap()).unwrap();
    let png =
        std::fs::read(t.join("loudness.png")).unwrap_or_else(|_| panic!("{tag}: no loudness.png"));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{tag}: not a picture"
    );
    (report, settings, text)
}

#[test]
fn modes_shape_section_contrast_and_documents_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (audio, truth) = song(44_100, &demo_arrangement(), 5);
    let mix = dir.path().join("song.wav");
    write_wav(&mix, &audio, 24, false);
    let run = |tag: &str, extra: &[&str]| master(dir.path(), &mix, tag, extra);

    // Transparent at a target that needs no limiting keeps the input's contrast.
    let (r, s, _) = run(
        "transparent",
        &["--targets", "ebu-r128", "--mode", "transparent"],
    );
    let t = &r.targets[0];
    assert!(s.sections.iter().all(|p| p.lufs_offset == 0.0));
    let input: Vec<f64> = t.sections.iter().map(|x| x.input_lufs).collect();
    let spread = |v: &[f64]| {
        v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
    };
    assert!(
        (t.achieved_contrast_lu - spread(&input)).abs() <= 1.0,
        "transparent: {} LU vs the input's {}",
        t.achieved_contrast_lu,
        spread(&input)
    );
    // Detected sections follow the song.
    assert_eq!(t.sections.len(), truth.len());
    for (sec, (label, start, _)) in t.sections.iter().zip(&truth) {
        assert!(
            (sec.start - start).abs() <= 1.0,
            "{label} at {start}: {sec:?}"
        );
    }
    // Cinematic widens, Radio Loud narrows, each as planned (within 1.5 LU of
    // what the limiter leaves), and both land on target.
    let (c, cs, _) = run(
        "cinematic",
        &["--targets", "ebu-r128", "--mode", "cinematic"],
    );
    // Each section has its own tone: the chorus wider and fuller than the intro.
    let (intro, chorus) = (&cs.sections[0], &cs.sections[2]);
    assert_eq!(
        (intro.section.as_str(), chorus.section.as_str()),
        ("Intro", "Chorus")
    );
    assert!(chorus.width > intro.width + 0.1, "{chorus:?} vs {intro:?}");
    assert!(chorus.eq.low > intro.eq.low + 0.5 && chorus.compression > intro.compression);
    // --amount: no width at all, half the EQ; the rest as planned.
    let (a, as_, _) = run(
        "amount",
        &[
            "--targets",
            "ebu-r128",
            "--mode",
            "cinematic",
            "--amount",
            "width=0,eq=0.5",
        ],
    );
    assert_eq!(as_.global.stereo_width, 1.0);
    for (x, y) in cs.sections.iter().zip(&as_.sections) {
        assert_eq!(y.width, 1.0);
        assert!((y.eq.low - 0.5 * x.eq.low).abs() < 1e-9, "{x:?} {y:?}");
        assert_eq!((x.compression, x.saturation), (y.compression, y.saturation));
    }
    assert!((a.targets[0].integrated_lufs + 23.0).abs() <= 0.1);
    let (l, _, _) = run("radio", &["--targets", "ebu-r128", "--mode", "radio-loud"]);
    let (c, l) = (&c.targets[0], &l.targets[0]);
    assert!(
        c.achieved_contrast_lu > t.achieved_contrast_lu + 1.0,
        "cinematic {c:?}"
    );
    assert!(
        l.achieved_contrast_lu < t.achieved_contrast_lu - 3.0,
        "radio {l:?}"
    );
    for x in [c, l] {
        assert!(
            (x.achieved_contrast_lu - x.planned_contrast_lu).abs() <= 1.5,
            "{x:?}"
        );
        assert!((x.integrated_lufs + 23.0).abs() <= 0.1);
    }
    // A/B clips: 30 s of mix and master around the most intense section,
    // at the same loudness.
    let (r, _, _) = run(
        "preview",
        &["--targets", "spotify,ebu-r128", "--mode", "cinematic"],
    );
    for t in &r.targets {
        let p = t.preview.as_ref().expect("preview");
        assert!((p.end - p.start - 30.0).abs() < 1e-9);
        let chorus = truth.iter().find(|(l, _, _)| l == "Chorus").unwrap();
        assert!(
            p.start <= chorus.1 && p.end >= chorus.2 - 1.0,
            "{p:?} misses the chorus"
        );
        let dir = dir.path().join("preview/song");
        let level = |f: &str| {
            let (a, _) = loopmind_worker::decode::decode_file(&dir.join(f)).unwrap();
            assert!((a.seconds() - 30.0).abs() < 0.01);
            loopmind_dsp::measure::loudness::measure_with(
                &a,
                loopmind_dsp::measure::loudness::Measure::INTEGRATED,
            )
            .unwrap()
            .integrated_lufs
        };
        let (m, x) = (level(&p.mix_file), level(&p.master_file));
        assert!(
            (m - x).abs() < 0.1 && (m - p.lufs).abs() < 0.1,
            "{}: mix {m}, master {x}",
            t.target
        );
    }
    // Reactivity 0: one static setting for every section.
    let (_, s0, _) = run(
        "static",
        &[
            "--targets",
            "ebu-r128",
            "--mode",
            "cinematic",
            "--reactivity",
            "0",
        ],
    );
    assert!(s0.sections.iter().all(|p| p.lufs_offset == 0.0));
    for p in &s0.sections {
        let q = &s0.sections[0];
        assert_eq!(
            (p.eq, p.compression, p.saturation, p.width),
            (q.eq, q.compression, q.saturation, q.width)
        );
    }

    // A given arrangement and emotion graph are used as they are.
    let arr = dir.path().join("arr.json");
    std::fs::write(
        &arr,
        r#"{"structure": [{"section": "Opening", "start": 0, "end": 24}, {"section": "Peak", "start": 24, "end": 72}]}"#,
    )
    .unwrap();
    let emo = dir.path().join("emo.json");
    std::fs::write(&emo, r#"{"curve": [{"time": 0, "intensity": 0.1, "emotion": "tender"}, {"time": 50, "intensity": 0.95, "emotion": "triumphant"}]}"#).unwrap();
    let (r, _, _) = run(
        "given",
        &[
            "--targets",
            "spotify",
            "--arrangement",
            arr.to_str().unwrap(),
            "--emotion",
            emo.to_str().unwrap(),
        ],
    );
    let secs = &r.targets[0].sections;
    assert_eq!(
        (secs[0].section.as_str(), secs[1].section.as_str()),
        ("Opening", "Peak")
    );
    assert_eq!(
        (secs[0].emotion.as_str(), secs[1].emotion.as_str()),
        ("tender", "triumphant")
    );

    // A malformed one is a named, per-track error.
    std::fs::write(
        &arr,
        r#"{"structure": [{"section": "A", "start": 0, "end": 99}]}"#,
    )
    .unwrap();
    let out = dir.path().join("bad");
    let o = loopmind(&[
        "master",
        mix.to_str().unwrap(),
        "--targets",
        "spotify",
        "--out",
        out.to_str().unwrap(),
        "--arrangement",
        arr.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = read_json(&out.join("song/error.json"));
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.contains("arrangement: structure[0].end") && msg.contains("beyond"),
        "{msg}"
    );
    assert_eq!(err["action"], "abort");
}

#[test]
fn settings_round_trip_bit_for_bit_and_edits_are_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let (audio, _) = song(44_100, &demo_arrangement(), 9);
    let mix = dir.path().join("song.wav");
    write_wav(&mix, &audio, 24, false);
    let run = |tag: &str, extra: &[&str]| master(dir.path(), &mix, tag, extra);
    let (_, first, _) = run(
        "first",
        &[
            "--targets",
            "spotify,cd",
            "--mode",
            "cinematic",
            "--dynamics",
            "0.2",
            "--amount",
            "saturation=0.5",
        ],
    );
    let settings = dir.path().join("first/song/master_settings.json");
    // The emitted plan, fed back: the same masters, bit for bit.
    let (r, again, _) = run("again", &["--settings", settings.to_str().unwrap()]);
    // The re-render's request is the first's with the plan it was given,
    // which is the first's plan.
    let mut asked = again.request.to_layer();
    let plan = asked.remove("plan").expect("the plan it was given");
    // Its targets name the rate each was rendered at where the first left
    // it to the input's.
    let mut want = first.request.to_layer();
    for (t, done) in want["targets"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(&first.targets)
    {
        if t["rate"].is_null() {
            t["rate"] = done.sample_rate_hz.into();
        }
    }
    assert_eq!(asked, want, "the same request");
    assert_eq!(plan["global"], serde_json::to_value(&first.global).unwrap());
    assert_eq!(
        plan["sections"],
        serde_json::to_value(&first.sections).unwrap()
    );
    let again = MasterSettings {
        request: first.request.clone(),
        ..again
    };
    assert_eq!(again, first, "the plan comes back as it was");
    for t in &r.targets {
        let a = std::fs::read(dir.path().join("first/song").join(&t.output_file)).unwrap();
        let b = std::fs::read(dir.path().join("again/song").join(&t.output_file)).unwrap();
        assert!(a == b, "{}: the re-render differs", t.output_file);
    }
    // An edited plan is rendered as edited, still on target.
    let mut edited: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    edited["sections"][2]["width"] = 1.8.into();
    edited["sections"][2]["eq"]["high"] = 3.0.into();
    let edited_path = dir.path().join("edited.json");
    std::fs::write(&edited_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let (r, e, _) = run(
        "edited",
        &[
            "--settings",
            edited_path.to_str().unwrap(),
            "--targets",
            "spotify",
        ],
    );
    assert_eq!((e.sections[2].width, e.sections[2].eq.high), (1.8, 3.0));
    assert_eq!(e.sections[1], first.sections[1]);
    assert!((r.targets[0].integrated_lufs + 14.0).abs() <= 0.1);
    let a = std::fs::read(dir.path().join("first/song/spotify.wav")).unwrap();
    let b = std::fs::read(dir.path().join("edited/song/spotify.wav")).unwrap();
    assert!(a != b, "the edit changed nothing");
    // A bad value is a named error, and nothing is rendered.
    edited["sections"][2]["width"] = 5.0.into();
    std::fs::write(&edited_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let out = dir.path().join("bad");
    let o = loopmind(&[
        "master",
        mix.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--settings",
        edited_path.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("sections[2].width"), "{err}");
    assert!(!out.join("song/spotify.wav").exists());
}
