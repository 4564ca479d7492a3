//! Helpers for the end-to-end tests: material, the binary, independent meters.
#![allow(dead_code)]

use loopmind_dsp::testsignals::{song, SongSection};
use loopmind_dsp::Audio;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn loopmind(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loopmind"))
        .args(args)
        .output()
        .expect("run loopmind")
}

/// A short song with a quiet intro, a verse and a loud chorus.
pub fn short_song(rate: u32) -> Audio {
    let s = SongSection::new;
    let sections = [
        // The intro well above the relative gate (-10 LU): a section sitting
        // on it makes meters that bin block loudness (ffmpeg: 0.01 LU) flip
        // blocks in or out and read up to 0.2 LU apart.
        s("Intro", 2, -9.0, false, false, false),
        s("Verse", 3, -6.0, true, true, false),
        s("Chorus", 4, 0.0, true, true, true),
    ];
    song(rate, &sections, 11).0
}

pub fn write_wav(path: &Path, a: &Audio, bits: u16, float: bool) {
    let spec = hound::WavSpec {
        channels: a.num_channels() as u16,
        sample_rate: a.rate,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let scale = ((1u64 << (bits - 1)) - 1) as f32;
    for i in 0..a.frames() {
        for c in &a.channels {
            if float {
                w.write_sample(c[i]).unwrap();
            } else {
                w.write_sample((c[i] * scale).round() as i32).unwrap();
            }
        }
    }
    w.finalize().unwrap();
}

/// Converts with ffmpeg (the test machine's, installed by .ci/run).
pub fn ffmpeg_convert(src: &Path, dst: &Path, args: &[&str]) {
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(src)
        .args(args)
        .arg(dst)
        .status()
        .expect("ffmpeg must be installed (.ci/run installs it)");
    assert!(st.success(), "ffmpeg failed to make {}", dst.display());
}

/// ffmpeg's ebur128 filter as an independent meter: (integrated LUFS to
/// 3 decimals, true peak dBTP to 1 decimal).
pub fn ffmpeg_meter(path: &Path) -> (f64, f64) {
    let meta = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("ffmpeg")
        .args(["-nostats", "-hide_banner", "-i"])
        .arg(path)
        .arg("-af")
        .arg(format!(
            "ebur128=peak=true:metadata=1,ametadata=mode=print:file={}",
            meta.path().display()
        ))
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(meta.path()).unwrap();
    let i = text
        .lines()
        .filter_map(|l| l.strip_prefix("lavfi.r128.I="))
        .next_back()
        .expect("ffmpeg printed integrated loudness")
        .parse()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let summary = &log[log.rfind("Summary:").expect("ffmpeg summary")..];
    let peak = summary
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Peak:"))
        .next_back()
        .expect("true peak line")
        .trim()
        .trim_end_matches("dBFS")
        .trim()
        .parse()
        .unwrap();
    (i, peak)
}

pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}
pub mod api;
pub mod hostile;
pub mod scenario;
pub mod services;

/// A JSON file LoopMind wrote (error.json, summary.json, ...).
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}
