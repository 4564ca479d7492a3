//! The end-of-run summary: printed for people, saved as `summary.json`.

use crate::local::Job;
use anyhow::Result;
use loopmind_worker::report::TrackReport;
use serde::Serialize;
use std::path::Path;

#[derive(Serialize)]
pub struct TargetLine {
    pub target: String,
    pub integrated_lufs: f64,
    pub true_peak_dbtp: f64,
    pub file: String,
}

#[derive(Serialize)]
pub struct TrackOutcome {
    pub track: String,
    pub source: String,
    pub targets: Vec<TargetLine>,
    pub error: Option<String>,
}

impl TrackOutcome {
    pub fn ok(job: &Job, r: TrackReport) -> Self {
        Self {
            track: job.track.clone(),
            source: job.input.display().to_string(),
            targets: r
                .targets
                .iter()
                .map(|t| TargetLine {
                    target: t.target.clone(),
                    integrated_lufs: t.integrated_lufs,
                    true_peak_dbtp: t.true_peak_dbtp,
                    file: format!("{}/{}", job.track, t.output_file),
                })
                .collect(),
            error: None,
        }
    }

    pub fn failed(job: &Job, error: String) -> Self {
        Self {
            track: job.track.clone(),
            source: job.input.display().to_string(),
            targets: Vec::new(),
            error: Some(error),
        }
    }
}

pub fn print(outcomes: &[TrackOutcome]) {
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    for o in outcomes {
        match &o.error {
            None => {
                println!("{}", o.track);
                for t in &o.targets {
                    println!(
                        "  {:<14} {:>7.2} LUFS  {:>6.2} dBTP  {}",
                        t.target, t.integrated_lufs, t.true_peak_dbtp, t.file
                    );
                }
            }
            Some(e) => println!("{}  FAILED  {}: {e}", o.track, o.source),
        }
    }
    println!(
        "{} tracks: {} mastered, {} failed",
        outcomes.len(),
        outcomes.len() - failed,
        failed
    );
}

pub fn save(path: &Path, outcomes: &[TrackOutcome]) -> Result<()> {
    loopmind_worker::render::write_json_atomic(path, &outcomes)?;
    Ok(())
}
