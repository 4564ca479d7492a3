//! Structure detection, measured. For a folder of real tracks: the sections
//! found (fine level and merged), their mean length and label shares. For
//! generated songs of known structure (several tempos, lead-ins, repeated
//! choruses, a crescendo that is not a boundary): how many true boundaries
//! are found within ±1 s and ±3 s, and how many boundaries are extra.
//!
//! `cargo run --release -p loopmind-worker --example sections -- [FOLDER] [--list]`

use loopmind_dsp::analysis::structure;
use loopmind_dsp::analysis::{beats, sections};
use loopmind_dsp::testsignals::{crescendo, pop_arrangement, song_at, SongSection};
use loopmind_dsp::Audio;
use std::collections::BTreeMap;

fn detect(audio: &Audio) -> (usize, Vec<sections::Section>, Option<f64>) {
    let f = sections::features(audio);
    let onsets = beats::onsets(audio);
    let grid = beats::grid(&onsets);
    let fine = sections::fine_edges(audio.seconds(), &f, grid.as_ref(), Some(&onsets)).len() - 1;
    (
        fine,
        structure::detect_with(audio.seconds(), &f, grid.as_ref(), Some(&onsets)),
        grid.map(|g| g.bpm),
    )
}

fn real(folder: &str, list: bool) {
    let mut files: Vec<_> = std::fs::read_dir(folder)
        .expect("a readable folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    println!(
        "{:<22} {:>7} {:>6} {:>5} {:>7}  labels",
        "track", "length", "fine", "secs", "mean s"
    );
    for path in files {
        let Ok((audio, _)) = loopmind_worker::decode::decode_file(&path) else {
            println!("{:<22} undecodable", path.display());
            continue;
        };
        let (fine, found, _) = detect(&audio);
        let mut shares: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &found {
            *shares.entry(&s.label).or_default() += 1;
        }
        let mean = audio.seconds() / found.len() as f64;
        let mut shares: Vec<_> = shares.into_iter().collect();
        shares.sort_by_key(|(_, c)| std::cmp::Reverse(*c));
        let text: Vec<String> = shares
            .iter()
            .map(|(l, c)| format!("{l} {:.0}%", 100.0 * *c as f64 / found.len() as f64))
            .collect();
        let name = path.file_stem().unwrap().to_string_lossy();
        println!(
            "{:<22} {:>6.0}s {:>6} {:>5} {:>7.1}  {}",
            name,
            audio.seconds(),
            fine,
            found.len(),
            mean,
            text.join(", ")
        );
        if list {
            for s in &found {
                println!("    {:>6.1} - {:>6.1}  {}", s.start, s.end, s.label);
            }
        }
    }
}

/// A generated song: its name, layout, tempo, lead-in and whether its first
/// verse is a crescendo.
type Case = (String, Vec<SongSection>, f64, f64, bool);

fn cases() -> Vec<Case> {
    let s = SongSection::new;
    let pop = pop_arrangement();
    let short = vec![
        s("Intro", 4, -12.0, false, true, false),
        s("Verse", 8, -6.0, true, true, false),
        s("Chorus", 8, 0.0, true, true, true),
        s("Verse", 8, -6.0, true, true, false),
        s("Chorus", 8, 0.0, true, true, true),
    ];
    let demo = loopmind_dsp::testsignals::demo_arrangement();
    let mut cases: Vec<Case> = Vec::new();
    for (name, layout) in [("demo", &demo), ("pop", &pop), ("verse-chorus", &short)] {
        for (bpm, lead) in [(120.0, 0.0), (92.0, 0.37), (138.0, 1.3), (75.0, 0.0)] {
            cases.push((name.to_string(), layout.clone(), bpm, lead, false));
        }
    }
    cases.push(("pop, crescendo verse".into(), pop, 110.0, 0.5, true));
    cases.push(("demo, crescendo verse".into(), demo, 128.0, 0.0, true));
    cases
}

/// Fine boundaries with and without onsets (`--list`, for diagnosis).
fn print_fine_edges(audio: &Audio) {
    let f = sections::features(audio);
    let o = beats::onsets(audio);
    let g = beats::grid(&o);
    let edges = |onsets| -> Vec<String> {
        sections::fine_edges(audio.seconds(), &f, g.as_ref(), onsets)
            .iter()
            .map(|e| format!("{e:.2}"))
            .collect()
    };
    let (with, without) = (edges(Some(&o)), edges(None));
    println!("    fine with onsets {with:?}\n    fine without {without:?}");
}

/// True boundaries found within 1 s and 3 s, true boundaries, extra ones
/// (none within 3 s of a true one).
fn score(
    truth: &[(String, f64, f64)],
    found: &[sections::Section],
) -> (usize, usize, usize, usize) {
    let starts: Vec<f64> = found.iter().skip(1).map(|s| s.start).collect();
    let within = |tol: f64| {
        truth
            .iter()
            .skip(1)
            .filter(|t| starts.iter().any(|s| (s - t.1).abs() <= tol))
            .count()
    };
    let extra = starts
        .iter()
        .filter(|s| truth.iter().skip(1).all(|t| (*s - t.1).abs() > 3.0))
        .count();
    (within(1.0), within(3.0), truth.len() - 1, extra)
}

fn generated() {
    println!("\ngenerated songs: true boundaries found within 1 s / 3 s, extra boundaries");
    let list = std::env::args().any(|a| a == "--list");
    let (mut hit1, mut hit3, mut total, mut extra) = (0, 0, 0, 0);
    for (seed, (name, layout, bpm, lead, rising)) in cases().into_iter().enumerate() {
        let (mut audio, truth) = song_at(44_100, &layout, seed as u64 + 40, bpm, lead);
        if rising {
            // The first verse rises 9 dB from its start to its end: a
            // crescendo inside a section, not a boundary.
            let (_, a, b) = truth.iter().find(|t| t.0 == "Verse").cloned().unwrap();
            crescendo(&mut audio, a, b, 9.0);
        }
        let (_, found, found_bpm) = detect(&audio);
        if list {
            print_fine_edges(&audio);
        }
        let (h1, h3, n, x) = score(&truth, &found);
        (hit1, hit3, total, extra) = (hit1 + h1, hit3 + h3, total + n, extra + x);
        let labels: Vec<String> = found
            .iter()
            .map(|s| match list {
                true => format!("{} {:.1}", s.label, s.start),
                false => s.label.clone(),
            })
            .collect();
        println!(
            "  {:<22} {:>5.0} bpm (found {:>5.1}) lead-in {:.2} s: {h1}/{n} at 1 s, {h3}/{n} at 3 s, {x} extra  [{}]",
            name,
            bpm,
            found_bpm.unwrap_or(0.0),
            lead,
            labels.join(" ")
        );
    }
    println!(
        "  all: {hit1}/{total} ({:.0}%) at 1 s, {hit3}/{total} ({:.0}%) at 3 s, {extra} extra",
        100.0 * hit1 as f64 / total as f64,
        100.0 * hit3 as f64 / total as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let list = args.iter().any(|a| a == "--list");
    if let Some(folder) = args.iter().find(|a| !a.starts_with("--")) {
        real(folder, list);
    }
    generated();
}
