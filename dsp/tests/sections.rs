//! Section detection on songs of known structure, and the user's documents.

use loopmind_dsp::sections::{self, parse_arrangement, parse_emotion};
use loopmind_dsp::testsignals::{demo_arrangement, song, song_at, SongSection};
use loopmind_dsp::DspError;

fn check(name: &str, layout: &[SongSection], seed: u64) {
    let (audio, truth) = song(44_100, layout, seed);
    let found = sections::detect(&audio);
    let got: Vec<String> = found
        .iter()
        .map(|s| format!("{} {:.1}-{:.1}", s.label, s.start, s.end))
        .collect();
    // Every true boundary found within 1 s, and no extra ones.
    let starts: Vec<f64> = found.iter().skip(1).map(|s| s.start).collect();
    for (label, start, _) in truth.iter().skip(1) {
        assert!(
            starts.iter().any(|s| (s - start).abs() <= 1.0),
            "{name}: boundary of {label} at {start} s not found in {got:?}"
        );
    }
    assert_eq!(found.len(), truth.len(), "{name}: {got:?}");
    // The chorus is labelled where the true chorus is.
    for ((label, start, end), f) in truth.iter().zip(&found) {
        if label == "Chorus" {
            assert_eq!(f.label, "Chorus", "{name}: {start}-{end} is {got:?}");
        } else {
            assert_ne!(
                f.label, "Chorus",
                "{name}: {label} {start}-{end} called chorus: {got:?}"
            );
        }
    }
    assert_eq!(found[0].label, "Intro", "{name}: {got:?}");
}

#[test]
fn boundaries_and_chorus_of_known_songs() {
    check("demo", &demo_arrangement(), 3);
    let s = SongSection::new;
    check(
        "verse-chorus",
        &[
            s("Intro", 4, -12.0, false, true, false),
            s("Verse", 6, -6.0, true, true, false),
            s("Chorus", 6, 0.0, true, true, true),
            s("Verse", 6, -6.0, true, true, false),
            s("Chorus", 6, 0.0, true, true, true),
        ],
        9,
    );
}

#[test]
fn boundaries_snap_to_the_beat() {
    // 100 BPM after a 0.37 s lead-in: bars every 2.4 s, nowhere near the
    // detector's 0.5 s feature grid.
    let (audio, truth) = song_at(44_100, &demo_arrangement(), 4, 100.0, 0.37);
    let grid = loopmind_dsp::beats::track(&audio).expect("a tempo");
    assert!((grid.bpm - 100.0).abs() < 0.5, "{grid:?}");
    let found = sections::detect(&audio);
    assert_eq!(found.len(), truth.len(), "{found:?}");
    for (f, (label, start, _)) in found.iter().zip(&truth).skip(1) {
        // On the true boundary (a beat), to within 20 ms.
        assert!(
            (f.start - start).abs() < 0.02,
            "{label} at {start:.3} s found at {:.3} s",
            f.start
        );
    }
}

#[test]
fn documents_are_validated_with_the_field_named() {
    let ok = parse_arrangement(
        r#"{"structure": [{"section": "Intro", "start": 0.0, "end": 12.5}, {"section": "Verse", "start": 12.5, "end": 40}]}"#,
        40.2,
    )
    .unwrap();
    assert_eq!(ok[1].label, "Verse");
    fn field<T: std::fmt::Debug>(r: Result<T, DspError>) -> String {
        match r {
            Err(DspError::Document { field, reason }) => format!("{field}: {reason}"),
            other => panic!("{other:?}"),
        }
    }
    let e = field(parse_arrangement(
        r#"{"structure": [{"section": "Intro", "start": 0, "end": 12}, {"section": "Verse", "start": 10, "end": 20}]}"#,
        40.0,
    ));
    assert!(
        e.starts_with("structure[1].start") && e.contains("overlaps"),
        "{e}"
    );
    let e = field(parse_arrangement(
        r#"{"structure": [{"section": "Intro", "start": 0, "end": 90}]}"#,
        40.0,
    ));
    assert!(
        e.starts_with("structure[0].end") && e.contains("beyond"),
        "{e}"
    );
    let e = field(parse_arrangement(
        r#"{"structure": [{"section": "A", "start": 5, "end": 2}]}"#,
        40.0,
    ));
    assert!(e.starts_with("structure[0].end"), "{e}");
    let e = field(parse_arrangement(r#"{"sections": []}"#, 40.0));
    assert!(e.starts_with("structure"), "{e}");
    let curve = parse_emotion(
        r#"{"curve": [{"time": 0, "intensity": 0.2, "emotion": "calm"}, {"time": 30, "intensity": 0.9}]}"#,
        40.0,
    )
    .unwrap();
    assert!((sections::intensity_at(&curve, 15.0) - 0.55).abs() < 1e-9);
    let e = field(parse_emotion(
        r#"{"curve": [{"time": 0, "intensity": 1.5}]}"#,
        40.0,
    ));
    assert!(e.starts_with("curve[0].intensity"), "{e}");
    let e = field(parse_emotion(
        r#"{"curve": [{"time": 5, "intensity": 0.5}, {"time": 5, "intensity": 0.6}]}"#,
        40.0,
    ));
    assert!(e.starts_with("curve[1].time"), "{e}");
}
