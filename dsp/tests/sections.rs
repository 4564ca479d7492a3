//! Section detection on songs of known structure, and the user's documents.

use loopmind_dsp::analysis::sections::{self, parse_arrangement, parse_emotion};
use loopmind_dsp::analysis::structure;
use loopmind_dsp::testsignals::{
    crescendo, demo_arrangement, pop_arrangement, song, song_at, SongSection,
};
use loopmind_dsp::DspError;

fn check(name: &str, layout: &[SongSection], seed: u64) {
    let (audio, truth) = song(44_100, layout, seed);
    let found = structure::detect(&audio);
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
    let grid = loopmind_dsp::analysis::beats::track(&audio).expect("a tempo");
    assert!((grid.bpm - 100.0).abs() < 0.5, "{grid:?}");
    let found = structure::detect(&audio);
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

/// Every true boundary within 1 s; returns what was found.
fn boundaries_within_a_second(
    name: &str,
    audio: &loopmind_dsp::Audio,
    truth: &[(String, f64, f64)],
) -> Vec<sections::Section> {
    let found = structure::detect(audio);
    let got: Vec<String> = found
        .iter()
        .map(|s| format!("{} {:.1}-{:.1}", s.label, s.start, s.end))
        .collect();
    for (label, start, _) in truth.iter().skip(1) {
        assert!(
            found.iter().skip(1).any(|s| (s.start - start).abs() <= 1.0),
            "{name}: boundary of {label} at {start:.2} s not found in {got:?}"
        );
    }
    found
}

#[test]
fn repeated_choruses_at_several_tempos_and_lead_ins() {
    for (bpm, lead_in, seed) in [(120.0, 0.0, 11), (92.0, 0.37, 12), (138.0, 1.3, 13)] {
        let name = format!("pop at {bpm} BPM after {lead_in} s");
        let (audio, truth) = song_at(44_100, &pop_arrangement(), seed, bpm, lead_in);
        let found = boundaries_within_a_second(&name, &audio, &truth);
        assert_eq!(found.len(), truth.len(), "{name}: {found:?}");
        // The three choruses are one repeated group, named as such; the
        // two verses another; nothing else is called either.
        for (f, (label, ..)) in found.iter().zip(&truth) {
            assert_eq!(&f.label, label, "{name}: {found:?}");
        }
        let choruses = found.iter().filter(|s| s.label == "Chorus").count();
        assert!(choruses * 10 <= found.len() * 6, "{name}: {found:?}");
    }
}

#[test]
fn a_crescendo_is_not_a_boundary() {
    let s = SongSection::new;
    let layout = [
        s("Intro", 4, -14.0, false, false, false),
        s("Verse", 16, -6.0, true, true, false),
        s("Chorus", 8, 0.0, true, true, true),
        s("Outro", 4, -14.0, false, false, false),
    ];
    let (mut audio, truth) = song_at(44_100, &layout, 14, 128.0, 0.0);
    // The verse rises 12 dB from its first bar to its last, 6 dB under the chorus.
    let (_, a, b) = truth.iter().find(|t| t.0 == "Verse").cloned().unwrap();
    crescendo(&mut audio, a, b, 12.0);
    let inside = |t: f64| t > a + 1.0 && t < b - 1.0;
    // Offered a cut half way up, merging takes it out (the level there is
    // 6 dB over the first half's mean, but on the line it rises along)
    // and keeps the true boundaries.
    let f = sections::features(&audio);
    let grid = loopmind_dsp::analysis::beats::track(&audio);
    let end = audio.seconds();
    let kept = loopmind_dsp::analysis::structure::merge(
        &f,
        &[0.0, a, 0.5 * (a + b), b, end],
        grid.as_ref(),
    );
    assert_eq!(kept, vec![0.0, a, b, end]);
    let found = boundaries_within_a_second("crescendo", &audio, &truth);
    assert!(
        found.iter().all(|s| !inside(s.start)),
        "a boundary inside the crescendo {a:.1}-{b:.1}: {found:?}"
    );
}

#[test]
fn one_texture_is_one_section() {
    // Three minutes of one groove whose level wanders by a dB or two every
    // four bars: no section changes, whatever the fine level finds.
    let s = SongSection::new;
    let levels = [
        -6.0, -7.5, -5.5, -7.0, -6.0, -5.0, -6.5, -7.5, -6.0, -5.5, -7.0, -6.0,
    ];
    let layout: Vec<SongSection> = levels
        .iter()
        .cycle()
        .take(24)
        .map(|&l| s("Groove", 4, l, true, true, true))
        .collect();
    let (audio, _) = song_at(44_100, &layout, 15, 128.0, 0.0);
    let f = sections::features(&audio);
    let onsets = loopmind_dsp::analysis::beats::onsets(&audio);
    let grid = loopmind_dsp::analysis::beats::grid(&onsets);
    let fine = sections::fine_edges(audio.seconds(), &f, grid.as_ref(), Some(&onsets));
    assert!(fine.len() > 3, "the fine level finds something: {fine:?}");
    let found = structure::detect_with(audio.seconds(), &f, grid.as_ref(), Some(&onsets));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].label,
        loopmind_dsp::analysis::structure::ONE_SECTION
    );
}

#[test]
fn instruments_entering_at_one_level_land_on_their_beat() {
    // Drums come in under a crescendo's quiet start, 2 dB under the intro:
    // the level hardly steps, the onsets do.
    let (mut audio, truth) = song_at(44_100, &pop_arrangement(), 16, 110.0, 0.5);
    let (_, a, b) = truth.iter().find(|t| t.0 == "Verse").cloned().unwrap();
    crescendo(&mut audio, a, b, 9.0);
    let found = structure::detect(&audio);
    let near = found
        .iter()
        .map(|s| s.start)
        .min_by(|x, y| (x - a).abs().total_cmp(&(y - a).abs()))
        .unwrap();
    assert!(
        (near - a).abs() < 0.05,
        "the verse at {a:.3} s found at {near:.3} s: {found:?}"
    );
}

#[test]
fn a_grid_found_at_half_tempo_keeps_eight_bar_sections() {
    // At 138 BPM the tracker hears 69: eight of its "bars" are 28 s, longer
    // than the song's sections; the phrase length is held to 20 s.
    let s = SongSection::new;
    let layout = [
        s("Intro", 4, -12.0, false, true, false),
        s("Verse", 8, -6.0, true, true, false),
        s("Chorus", 8, 0.0, true, true, true),
        s("Verse", 8, -6.0, true, true, false),
        s("Chorus", 8, 0.0, true, true, true),
    ];
    let (audio, truth) = song_at(44_100, &layout, 52, 138.0, 1.3);
    let grid = loopmind_dsp::analysis::beats::track(&audio).expect("a tempo");
    assert!((grid.bpm - 69.0).abs() < 1.0, "{grid:?}");
    let found = boundaries_within_a_second("half tempo", &audio, &truth);
    assert_eq!(found.len(), truth.len(), "{found:?}");
}
