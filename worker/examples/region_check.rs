//! Region verification against whole-file verification, on real masters:
//! for each `<target>.wav` given (a preset's master), every codec of the
//! preset is checked both ways and the readings compared.
//!
//!   cargo run --release -p loopmind-worker --example region_check -- out/*/spotify.wav ...
//!
//! Prints one line per (master, codec): the whole file's and the regions'
//! decoded true peak (the higher of the two meters), their difference, both
//! verdicts against the preset's ceiling, the share encoded and both CPU
//! times; then the largest difference, the misses and the CPU totals.

use loopmind_dsp::targets::preset;
use loopmind_worker::codec::check::{check, MasterLevels};
use loopmind_worker::codec::regions;
use std::path::Path;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Default::default();
    let (mut worst, mut misses, mut false_alarms, mut n) = (0f64, 0, 0, 0);
    let (mut cpu_whole, mut cpu_regions) = (0.0, 0.0);
    println!("master\tcodec\twhole_dbtp\tregions_dbtp\tdiff_db\twhole_over\tregions_over\tfraction\tcpu_whole\tcpu_regions");
    for arg in std::env::args().skip(1) {
        let path = Path::new(&arg);
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let Some(t) = preset(&name) else { continue };
        let levels = MasterLevels {
            true_peak_dbtp: f64::NEG_INFINITY,
            integrated_lufs: f64::NEG_INFINITY,
        };
        let hot = regions::hot_spans(path, &limits, t.ceiling_dbtp).unwrap();
        for &c in &t.codecs {
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
            let rs = regions::regions(&hot, c);
            let region = regions::check(path, c, &rs, levels, dir.path(), "r", &limits).unwrap();
            let peak = |r: &loopmind_worker::codec::check::CodecReport| {
                r.true_peak_dbtp.max(r.true_peak_bs1770_dbtp)
            };
            let (w, r) = (peak(&whole), peak(&region));
            let (wo, ro) = (whole.over(t.ceiling_dbtp), region.over(t.ceiling_dbtp));
            misses += (wo && !ro) as u32;
            false_alarms += (!wo && ro) as u32;
            // Only peaks that can decide a verdict count for the agreement.
            if w > t.ceiling_dbtp - 1.0 {
                worst = worst.max((w - r).abs());
            }
            n += 1;
            cpu_whole += whole.cpu_seconds;
            cpu_regions += region.cpu_seconds;
            println!(
                "{arg}\t{c}\t{w:.3}\t{r:.3}\t{:+.3}\t{wo}\t{ro}\t{:.3}\t{:.2}\t{:.2}",
                r - w,
                region.encoded_fraction,
                whole.cpu_seconds,
                region.cpu_seconds
            );
        }
    }
    println!(
        "{n} checks: {misses} misses, {false_alarms} false alarms; largest |regions - whole| \
         where the whole file peaks within 1 dB of the ceiling: {worst:.3} dB; CPU whole \
         {cpu_whole:.1} s, regions {cpu_regions:.1} s"
    );
}
