//! The end-of-run summary: printed for people, saved as `summary.json` and
//! `summary.html` beside the masters.

use loopmind_worker::job::{JobResult, Status};
use loopmind_worker::store::{ObjectStore, StoreError};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct TargetLine {
    pub target: String,
    #[serde(serialize_with = "loopmind_dsp::level::serialize")]
    pub integrated_lufs: f64,
    #[serde(serialize_with = "loopmind_dsp::level::serialize")]
    pub true_peak_dbtp: f64,
    pub file: String,
    pub ceiling_dbtp: f64,
    /// The highest-peaking of the platform's codecs, decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst_codec: Option<CodecLine>,
    /// Why the master was not shipped (its codecs would clip it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
    /// How far under its target's loudness the master was shipped (it was
    /// out of reach by no more than the request tolerates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_lu: Option<f64>,
}

/// One codec's reading of a master, as the summary shows it.
#[derive(Clone, Debug, Serialize)]
pub struct CodecLine {
    pub codec: String,
    #[serde(serialize_with = "loopmind_dsp::level::serialize")]
    pub true_peak_dbtp: f64,
    /// Samples and inter-sample points over full scale.
    pub overs: u64,
}

impl TargetLine {
    /// "-1.16 dBTP after opus 128k" (and the overs, if any), or nothing.
    fn codec_text(&self) -> String {
        if let Some(w) = &self.withheld {
            return format!("WITHHELD: {w}");
        }
        let short = self
            .short_lu
            .map_or(String::new(), |s| format!("SHORT by {s:.2} LU  "));
        short
            + &self.worst_codec.as_ref().map_or(String::new(), |c| {
                let overs = if c.overs > 0 {
                    format!(", {} overs", c.overs)
                } else {
                    String::new()
                };
                format!("{:.2} dBTP after {}{overs}", c.true_peak_dbtp, c.codec)
            })
    }

    fn codec_over(&self) -> bool {
        self.withheld.is_some()
            || self
                .worst_codec
                .as_ref()
                .is_some_and(|c| c.overs > 0 || c.true_peak_dbtp > self.ceiling_dbtp)
    }
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
    /// A track with nothing to say yet.
    pub fn empty(track: &str, source: &str) -> Self {
        Self {
            track: track.into(),
            source: source.into(),
            targets: Vec::new(),
            error: None,
            skipped: false,
            album: None,
            album_lufs_offset: None,
            duration_seconds: 0.0,
        }
    }

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
                    ceiling_dbtp: t.ceiling_dbtp,
                    worst_codec: t
                        .codecs
                        .iter()
                        .max_by(|a, b| a.true_peak_dbtp.total_cmp(&b.true_peak_dbtp))
                        .map(|c| CodecLine {
                            codec: c.codec.to_string(),
                            true_peak_dbtp: c.true_peak_dbtp.max(c.true_peak_bs1770_dbtp),
                            overs: c.samples_over + c.intersample_overs,
                        }),
                    withheld: t.withheld.clone(),
                    short_lu: t.short.map(|s| s.short_lu),
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
    pub schema_version: loopmind_worker::schema::SchemaVersion,
    pub catalog: &'a str,
    pub total: usize,
    pub mastered: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Targets of mastered tracks whose master was withheld.
    pub withheld: usize,
    /// Targets shipped short of their loudness, within the tolerance.
    pub short: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub albums: Vec<AlbumLine>,
    pub tracks: &'a [TrackOutcome],
}

fn albums(tracks: &[TrackOutcome]) -> Vec<AlbumLine> {
    use loopmind_worker::job::{album_loudness, Measurement};
    // Grouped in one pass: a catalog of many albums is never scanned once
    // per album.
    let mut by_album: std::collections::BTreeMap<&str, Vec<&TrackOutcome>> = Default::default();
    for t in tracks {
        if let Some(a) = t.album.as_deref() {
            by_album.entry(a).or_default().push(t);
        }
    }
    by_album
        .into_iter()
        .map(|(name, members)| {
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
            schema_version: Default::default(),
            catalog,
            total: tracks.len(),
            mastered: tracks.len() - failed,
            failed,
            skipped: tracks.iter().filter(|o| o.skipped).count(),
            withheld: tracks
                .iter()
                .flat_map(|o| &o.targets)
                .filter(|t| t.withheld.is_some())
                .count(),
            short: tracks
                .iter()
                .flat_map(|o| &o.targets)
                .filter(|t| t.short_lu.is_some())
                .count(),
            albums: albums(tracks),
            tracks,
        }
    }

    /// Every track mastered and every master shipped.
    pub fn all_ok(&self) -> bool {
        self.failed == 0 && self.withheld == 0
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
                        let over = if t.codec_over() {
                            "  OVER ITS CEILING"
                        } else {
                            ""
                        };
                        println!(
                            "  {:<14} {:>7.2} LUFS  {:>6.2} dBTP  {}  {}{over}",
                            t.target,
                            t.integrated_lufs,
                            t.true_peak_dbtp,
                            if t.withheld.is_some() { "-" } else { &t.file },
                            t.codec_text()
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
        // A clause for a count, said only where it is not 0.
        let clause = |n: usize, text: &str| match n {
            0 => String::new(),
            n => text.replace("{}", &n.to_string()),
        };
        let skipped = clause(self.skipped, " ({} already complete, skipped)");
        let withheld = clause(
            self.withheld,
            "; {} masters withheld (over their ceiling once encoded)",
        );
        let short = clause(
            self.short,
            "; {} masters shipped short of their loudness (within the tolerance)",
        );
        println!(
            "{} tracks: {} mastered, {} failed{skipped}{withheld}{short}",
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
                        let class = if t.codec_over() { " class=fail" } else { "" };
                        rows.push_str(&format!(
                            "<tr><td>{name}</td><td>{}</td><td class=n>{:.2}</td><td class=n>{:.2}</td><td{class}>{}</td><td>{}</td></tr>\n",
                            esc(&t.target),
                            t.integrated_lufs,
                            t.true_peak_dbtp,
                            esc(&t.codec_text()),
                            if t.withheld.is_some() {
                                String::new()
                            } else {
                                link(&o.track, &t.target, &t.file)
                            },
                        ));
                    }
                }
                Some(e) => rows.push_str(&format!(
                    "<tr class=fail><td>{}</td><td colspan=5>FAILED: {}</td></tr>\n",
                    esc(&o.track),
                    esc(e)
                )),
            }
        }
        format!(
            "<!doctype html>\n<html><head><meta charset=utf-8><title>LoopMind: {c}</title>\n\
             <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
             td,th{{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}}\
             .n{{text-align:right;font-variant-numeric:tabular-nums}}.fail td,td.fail{{color:#b00}}</style>\n\
             </head><body>\n<h1>{c}</h1>\n<p>{t} tracks: {m} mastered, {f} failed, {s} already complete, {w} masters withheld, {sh} shipped short of their loudness.</p>\n\
             <table><tr><th>track</th><th>target</th><th>LUFS</th><th>dBTP</th><th>worst codec</th><th>file</th></tr>\n{rows}</table>\n</body></html>\n",
            c = esc(self.catalog),
            t = self.total,
            m = self.mastered,
            f = self.failed,
            s = self.skipped,
            w = self.withheld,
            sh = self.short,
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

/// A link to a master, made from the track and target names (never from a
/// file name a report carried): a relative path (`./`), each segment
/// percent-encoded, so no name can become a `javascript:` or off-site URL.
/// Names that are not safe ids get no link, only their escaped text.
fn link(track: &str, target: &str, file: &str) -> String {
    use loopmind_worker::layout::safe_id;
    if !(safe_id(track) && safe_id(target)) {
        return esc(file);
    }
    let href = format!(
        "./{}/{}",
        percent(track),
        percent(&loopmind_worker::layout::master_file(target))
    );
    format!("<a href=\"{}\">{}</a>", esc(&href), esc(file))
}

/// RFC 3986 unreserved characters stay, every other byte is `%XX`.
fn percent(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(track: &str, target: &str, file: &str) -> TrackOutcome {
        TrackOutcome {
            track: track.into(),
            source: format!("{track}.wav"),
            targets: vec![TargetLine {
                target: target.into(),
                integrated_lufs: -14.0,
                true_peak_dbtp: -1.0,
                file: file.into(),
                ceiling_dbtp: -1.0,
                worst_codec: None,
                withheld: None,
                short_lu: None,
            }],
            error: None,
            skipped: false,
            album: None,
            album_lufs_offset: None,
            duration_seconds: 1.0,
        }
    }

    #[test]
    fn a_master_over_its_ceiling_after_a_codec_is_marked() {
        let mut o = outcome("t", "spotify", "t/spotify.wav");
        let line = |dbtp: f64, overs: u64| CodecLine {
            codec: "opus 128k".into(),
            true_peak_dbtp: dbtp,
            overs,
        };
        let page = |o: &TrackOutcome| {
            Summary {
                schema_version: Default::default(),
                catalog: "c",
                total: 1,
                mastered: 1,
                failed: 0,
                skipped: 0,
                withheld: 0,
                short: 0,
                albums: Vec::new(),
                tracks: std::slice::from_ref(o),
            }
            .html()
        };
        o.targets[0].worst_codec = Some(line(-1.16, 0));
        let under = page(&o);
        assert!(
            under.contains("<td>-1.16 dBTP after opus 128k</td>"),
            "{under}"
        );
        o.targets[0].worst_codec = Some(line(-0.39, 0));
        assert!(page(&o).contains("<td class=fail>-0.39 dBTP after opus 128k</td>"));
        o.targets[0].worst_codec = Some(line(-1.2, 3));
        assert!(page(&o).contains("<td class=fail>-1.20 dBTP after opus 128k, 3 overs</td>"));
        // A withheld master: said in red, and no link to a file that is not there.
        o.targets[0].withheld = Some("out of reach".into());
        let w = page(&o);
        assert!(
            w.contains("<td class=fail>WITHHELD: out of reach</td>"),
            "{w}"
        );
        assert!(!w.contains("href"), "{w}");
    }

    /// Every href in the page, as written.
    fn hrefs(html: &str) -> Vec<String> {
        html.split("href=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].to_string())
            .collect()
    }

    #[test]
    fn links_are_relative_paths_the_summary_made() {
        let tracks = [
            outcome(
                "javascript:alert(1)",
                "spotify",
                "javascript:alert(1)/spotify.wav",
            ),
            // A report whose output_file was tampered with.
            outcome("song", "spotify", "javascript:alert(document.cookie)"),
            outcome("<b>x</b>", "cd", "<script>alert(1)</script>"),
        ];
        let html = Summary::new("c\"><script>", &tracks).html();
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>x"), "{html}");
        let links = hrefs(&html);
        assert_eq!(links, vec!["./song/spotify.wav".to_string()], "{html}");
        // A safe name with characters a URL treats specially stays a path.
        assert_eq!(percent("a:b"), "a%3Ab");
    }
}
