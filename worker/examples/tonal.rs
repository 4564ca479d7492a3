//! How far each file's tonal balance is from a reference's: the spectral
//! distance reference matching reports (RMS over the third-octave bands of
//! 63 Hz .. 8 kHz, level taken out, dB), and the difference per octave.
//!
//! `cargo run --release -p loopmind-worker --example tonal -- REFERENCE FILE...`

use loopmind_dsp::analysis::reference::{balance, distance_db, thirds_hz};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [reference, files @ ..] = &args[..] else {
        eprintln!("usage: tonal REFERENCE FILE...");
        std::process::exit(2);
    };
    let (r, _) =
        loopmind_worker::decode::decode_file(reference.as_ref()).expect("reference decodes");
    let rb = balance(&r);
    let octaves = [63.0, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0];
    println!("reference {reference}");
    for f in files {
        let (a, _) = loopmind_worker::decode::decode_file(f.as_ref()).expect("file decodes");
        let b = balance(&a);
        let d = distance_db(&b, &rb, |_| 0.0, a.rate.min(r.rate));
        // Reference minus file per octave (nearest third), relative to 1 kHz.
        let at = |bal: &loopmind_dsp::analysis::reference::Balance, hz: f64| {
            let (i, _) = thirds_hz()
                .into_iter()
                .enumerate()
                .min_by(|x, y| (x.1 / hz).ln().abs().total_cmp(&(y.1 / hz).ln().abs()))
                .unwrap();
            bal.bands_db[i].unwrap_or(f64::NAN)
        };
        let diff: Vec<String> = octaves
            .iter()
            .map(|&hz| {
                let v = (at(&rb, hz) - at(&b, hz)) - (at(&rb, 1000.0) - at(&b, 1000.0));
                format!("{v:+.1}")
            })
            .collect();
        println!(
            "  {f}: distance {} dB; reference minus file by octave 63 Hz..8 kHz (re 1 kHz): {}",
            d.map_or("n/a".into(), |d| format!("{d:.2}")),
            diff.join(" ")
        );
    }
}
