//! How well a probe (a sample of a master's hottest stretches) estimates
//! what a codec adds over the whole file: for each `<target>.wav` given (a
//! preset's master), every settling codec of the preset is checked over the
//! whole file and over probes of several shapes.
//!
//!   cargo run --release -p loopmind-worker --example probe_check -- out/*/spotify.wav ...
//!
//! Prints one line per (master, codec, probe): the whole file's and the
//! probe's decoded true peak (the higher of the two meters), the probe's
//! shortfall, the share it encoded and both CPU times.

use loopmind_dsp::targets::preset;
use loopmind_worker::codec::check::{check, CodecReport, MasterLevels};
use loopmind_worker::codec::regions;
use std::path::Path;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Default::default();
    let shapes: Vec<(u64, f64)> = std::env::var("PROBES")
        .unwrap_or_else(|_| "8:4,16:2,24:1,32:0".into())
        .split(',')
        .map(|s| {
            let (n, l) = s.split_once(':').unwrap();
            (n.parse().unwrap(), l.parse().unwrap())
        })
        .collect();
    let peak = |r: &CodecReport| r.true_peak_dbtp.max(r.true_peak_bs1770_dbtp);
    println!(
        "master\tcodec\tprobe\twhole_dbtp\tprobe_dbtp\tshort_db\tfraction\tcpu_whole\tcpu_probe"
    );
    for arg in std::env::args().skip(1) {
        let path = Path::new(&arg);
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let Some(t) = preset(&name) else { continue };
        let levels = MasterLevels {
            true_peak_dbtp: f64::NEG_INFINITY,
            integrated_lufs: f64::NEG_INFINITY,
        };
        let hot = regions::hot_spans(path, &limits, t.ceiling_dbtp).unwrap();
        for &c in t.codecs.iter().filter(|c| regions::settles(**c)) {
            let whole = check(
                path,
                levels,
                &[c],
                dir.path(),
                "w",
                &Default::default(),
                &limits,
            )
            .unwrap()
            .remove(0)
            .0;
            for &(n, secs) in &shapes {
                let span = (secs * hot.rate as f64) as u64;
                let rs = regions::probe(&hot, c, n, span);
                let p = regions::check(path, c, &rs, levels, dir.path(), "p", &limits).unwrap();
                if std::env::var_os("EACH").is_some() {
                    for r in &rs {
                        let one = regions::check(path, c, &[*r], levels, dir.path(), "p", &limits)
                            .unwrap();
                        println!("  region {r:?}: {:.3}", peak(&one));
                        if let Ok(spec) = std::env::var("REGION") {
                            let v: Vec<u64> = spec.split(':').map(|x| x.parse().unwrap()).collect();
                            let r2 = regions::Region {
                                start: v[0],
                                end: v[1],
                                skip: v[2],
                                cut_end: v[1] < hot.frames,
                            };
                            let one =
                                regions::check(path, c, &[r2], levels, dir.path(), "p", &limits)
                                    .unwrap();
                            println!("    {r2:?}: {:.3}", peak(&one));
                            break;
                        }
                    }
                }
                println!(
                    "{arg}\t{c}\t{n}x{secs}s\t{:.3}\t{:.3}\t{:+.3}\t{:.3}\t{:.2}\t{:.2}",
                    peak(&whole),
                    peak(&p),
                    peak(&whole) - peak(&p),
                    p.encoded_fraction,
                    whole.cpu_seconds,
                    p.cpu_seconds
                );
            }
        }
    }
}
