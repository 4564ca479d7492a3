//! The end-of-run summary: printed for people, saved as `summary.json` and
//! `summary.html` beside the masters.

use loopmind_worker::job::{JobResult, Status};
use loopmind_worker::store::{ObjectStore, StoreError};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct TargetLine {
    pub target: String,
    pub integrated_lufs: f64,
    pub true_peak_dbtp: f64,
    pub file: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrackOutcome {
    pub track: String,
    pub source: String,
    pub targets: Vec<TargetLine>,
    pub error: Option<String>,
    /// The outputs were already complete and matching: not rendered again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    /// The album's shared offset as it applies to this track (LU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub album_lufs_offset: Option<f64>,
    #[serde(skip)]
    pub duration_seconds: f64,
}

/// An album's figures: one offset for all, the album's loudness per target.
#[derive(Clone, Debug, Serialize)]
pub struct AlbumLine {
    pub album: String,
    pub tracks: usize,
    pub failed: usize,
    /// Per target: the album's integrated loudness from its masters
    /// (length-weighted mean power).
    pub targets: Vec<(String, f64)>,
}

impl TrackOutcome {
    /// `prefix` is where the track's files sit, relative to the summary.
    pub fn from_result(r: &JobResult, source: &str, prefix: &str) -> Self {
        let album = r.report.as_ref().and_then(|rep| rep.album.clone());
        let duration_seconds = r
            .report
            .as_ref()
            .map_or(0.0, |rep| rep.input.duration_seconds);
        let targets = r.report.as_ref().map_or(Vec::new(), |rep| {
            rep.targets
                .iter()
                .map(|t| TargetLine {
                    target: t.target.clone(),
                    integrated_lufs: t.integrated_lufs,
                    true_peak_dbtp: t.true_peak_dbtp,
                    file: format!("{prefix}{}", t.output_file),
                })
                .collect()
        });
        Self {
            track: r.track.clone(),
            source: source.to_string(),
            targets,
            error: match r.status {
                Status::Mastered | Status::Measured => None,
                Status::Failed => Some(
                    r.error
                        .as_ref()
                        .map_or("failed".to_string(), |e| e.error.clone()),
                ),
            },
            skipped: false,
            album_lufs_offset: album.as_ref().map(|a| a.lufs_offset),
            album: album.map(|a| a.album),
            duration_seconds,
        }
    }
}

#[derive(Serialize)]
pub struct Summary<'a> {
    pub catalog: &'a str,
    pub total: usize,
    pub mastered: usize,
    pub failed: usize,
    pub skipped: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub albums: Vec<AlbumLine>,
    pub tracks: &'a [TrackOutcome],
}

fn albums(tracks: &[TrackOutcome]) -> Vec<AlbumLine> {
    use loopmind_worker::job::{album_loudness, Measurement};
    let mut names: Vec<&str> = tracks.iter().filter_map(|t| t.album.as_deref()).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let members: Vec<&TrackOutcome> = tracks
                .iter()
                .filter(|t| t.album.as_deref() == Some(name))
                .collect();
            let mut targets: Vec<(String, f64)> = Vec::new();
            if let Some(first) = members.first() {
                for t in &first.targets {
                    let ms: Vec<Measurement> = members
                        .iter()
                        .filter_map(|m| {
                            m.targets
                                .iter()
                                .find(|x| x.target == t.target)
                                .map(|x| (m, x))
                        })
                        .map(|(m, x)| Measurement {
                            integrated_lufs: x.integrated_lufs,
                            duration_seconds: m.duration_seconds,
                        })
                        .collect();
                    if let Some(l) = album_loudness(&ms) {
                        targets.push((t.target.clone(), l));
                    }
                }
            }
            AlbumLine {
                album: name.to_string(),
                tracks: members.len(),
                failed: members.iter().filter(|m| m.error.is_some()).count(),
                targets,
            }
        })
        .collect()
}

impl<'a> Summary<'a> {
    pub fn new(catalog: &'a str, tracks: &'a [TrackOutcome]) -> Self {
        let failed = tracks.iter().filter(|o| o.error.is_some()).count();
        Self {
            catalog,
            total: tracks.len(),
            mastered: tracks.len() - failed,
            failed,
            skipped: tracks.iter().filter(|o| o.skipped).count(),
            albums: albums(tracks),
            tracks,
        }
    }

    pub fn all_ok(&self) -> bool {
        self.failed == 0
    }

    pub fn print(&self) {
        for o in self.tracks {
            match &o.error {
                None => {
                    let note = if o.skipped {
                        "  (already complete)"
                    } else {
                        ""
                    };
                    let album = match (&o.album, o.album_lufs_offset) {
                        (Some(a), Some(off)) => format!("  [album {a}, {off:+.2} LU]"),
                        _ => String::new(),
                    };
                    println!("{}{album}{note}", o.track);
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
        for a in &self.albums {
            let levels: Vec<String> = a
                .targets
                .iter()
                .map(|(t, l)| format!("{t} {l:.2} LUFS"))
                .collect();
            println!(
                "album {}: {} tracks, one shared offset; album loudness {}",
                a.album,
                a.tracks,
                levels.join(", ")
            );
        }
        let skipped = if self.skipped > 0 {
            format!(" ({} already complete, skipped)", self.skipped)
        } else {
            String::new()
        };
        println!(
            "{} tracks: {} mastered, {} failed{skipped}",
            self.total, self.mastered, self.failed
        );
    }

    pub fn html(&self) -> String {
        let mut rows = String::new();
        for o in self.tracks {
            match &o.error {
                None => {
                    for (i, t) in o.targets.iter().enumerate() {
                        let name = if i == 0 { esc(&o.track) } else { String::new() };
                        rows.push_str(&format!(
                            "<tr><td>{name}</td><td>{}</td><td class=n>{:.2}</td><td class=n>{:.2}</td><td><a href=\"{f}\">{f}</a></td></tr>\n",
                            esc(&t.target),
                            t.integrated_lufs,
                            t.true_peak_dbtp,
                            f = esc(&t.file)
                        ));
                    }
                }
                Some(e) => rows.push_str(&format!(
                    "<tr class=fail><td>{}</td><td colspan=4>FAILED: {}</td></tr>\n",
                    esc(&o.track),
                    esc(e)
                )),
            }
        }
        format!(
            "<!doctype html>\n<html><head><meta charset=utf-8><title>LoopMind: {c}</title>\n\
             <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
             td,th{{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}}\
             .n{{text-align:right;font-variant-numeric:tabular-nums}}.fail td{{color:#b00}}</style>\n\
             </head><body>\n<h1>{c}</h1>\n<p>{t} tracks: {m} mastered, {f} failed, {s} already complete.</p>\n\
             <table><tr><th>track</th><th>target</th><th>LUFS</th><th>dBTP</th><th>file</th></tr>\n{rows}</table>\n</body></html>\n",
            c = esc(self.catalog),
            t = self.total,
            m = self.mastered,
            f = self.failed,
            s = self.skipped,
        )
    }

    /// Writes `summary.json` and `summary.html` under `prefix`.
    pub async fn save(&self, store: &dyn ObjectStore, prefix: &str) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(self).expect("summary serialises");
        store
            .put_bytes(&format!("{prefix}summary.json"), json)
            .await?;
        store
            .put_bytes(&format!("{prefix}summary.html"), self.html().into_bytes())
            .await
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
