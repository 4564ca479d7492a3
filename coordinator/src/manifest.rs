//! Catalog manifests: which tracks to master and how. A manifest is the
//! render request's fields ([`RenderRequest`]) for every track, plus
//! `catalog` and `tracks`; a track is `id`, `source`, `album` and any of the
//! request's fields, which override the catalog's for that track. Validated
//! whole before anything is published: every problem is listed, not just
//! the first.

use loopmind_worker::job::{safe_id, TrackSpec};
use loopmind_worker::request::RenderRequest;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// A manifest as read: the catalog's name, its request fields, its tracks.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub catalog: String,
    /// The request fields every track starts from.
    defaults: Map<String, Value>,
    tracks: Vec<Map<String, Value>>,
}

/// The tracks a manifest plans, and what it could not.
pub struct Planned {
    pub tracks: Vec<TrackSpec>,
    /// (id, source) of tracks whose options were refused: their sources are
    /// still checked, so every problem is listed at once.
    pub unplanned: Vec<(String, String)>,
    pub problems: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid manifest:\n  - {}", .0.join("\n  - "))]
pub struct ManifestError(pub Vec<String>);

fn invalid(problem: String) -> ManifestError {
    ManifestError(vec![format!("not a valid manifest: {problem}")])
}

/// A manifest field that should hold a string and does not.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {value} is not a string")]
struct NotAString {
    key: &'static str,
    value: Value,
}

/// Takes a string field out of a JSON object (absent: None).
fn take_string(
    m: &mut Map<String, Value>,
    key: &'static str,
) -> Result<Option<String>, NotAString> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(value) => Err(NotAString { key, value }),
    }
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let Value::Object(mut defaults) = v else {
            return Err(invalid("not a JSON object".into()));
        };
        let catalog = take_string(&mut defaults, "catalog")
            .map_err(|e| invalid(e.to_string()))?
            .ok_or_else(|| invalid("missing field `catalog`".into()))?;
        let tracks = match defaults.remove("tracks") {
            Some(Value::Array(items)) => items,
            _ => return Err(invalid("`tracks` must be a list".into())),
        };
        let tracks = tracks
            .into_iter()
            .enumerate()
            .map(|(i, t)| match t {
                Value::Object(m) => Ok(m),
                _ => Err(invalid(format!("tracks[{i}] is not an object"))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Manifest {
            catalog,
            defaults,
            tracks,
        })
    }

    /// Checks everything that can be checked without the store; returns the
    /// tracks with their requests, or every problem found.
    #[cfg(test)]
    pub fn plan(&self) -> Result<Vec<TrackSpec>, ManifestError> {
        let planned = self.plan_all();
        match planned.problems.is_empty() {
            true => Ok(planned.tracks),
            false => Err(ManifestError(planned.problems)),
        }
    }

    /// Every track as far as it can be planned, and every problem found (the
    /// caller adds what only the store can tell before reporting them all).
    pub fn plan_all(&self) -> Planned {
        let mut problems = Vec::new();
        if !safe_id(&self.catalog) {
            problems.push(format!(
                "catalog '{}': use 1-128 letters, digits, '-', '_' or '.'",
                self.catalog
            ));
        }
        if self.catalog == loopmind_worker::layout::LOCAL_CATALOG {
            problems.push(format!(
                "catalog '{}' is reserved for `loopmind master`; pick another name",
                self.catalog
            ));
        }
        if self.tracks.is_empty() {
            problems.push("no tracks".into());
        }
        // The catalog's own fields, checked once: a problem there is not
        // repeated for every track that inherits it.
        let catalog_error = RenderRequest::from_layers(&[&self.defaults]).err();
        if let Some(e) = &catalog_error {
            problems.push(format!("catalog: {e}"));
        }
        let mut planned = Planned {
            tracks: Vec::new(),
            unplanned: Vec::new(),
            problems,
        };
        let mut seen = HashSet::new();
        for (i, entry) in self.tracks.iter().enumerate() {
            self.plan_track(i, entry, catalog_error.is_some(), &mut seen, &mut planned);
        }
        planned
    }

    fn plan_track(
        &self,
        i: usize,
        entry: &Map<String, Value>,
        catalog_refused: bool,
        seen: &mut HashSet<String>,
        planned: &mut Planned,
    ) {
        let mut fields = entry.clone();
        let mut take = |key| take_string(&mut fields, key);
        let (id, source, album) = match (take("id"), take("source"), take("album")) {
            (Ok(id), Ok(source), Ok(album)) => (id, source, album),
            (a, b, c) => {
                let e = [a.err(), b.err(), c.err()].into_iter().flatten();
                let e: Vec<String> = e.map(|e| e.to_string()).collect();
                let problems = &mut planned.problems;
                problems.push(format!("track {}: {}", i + 1, e.join("; ")));
                return;
            }
        };
        let id = id.unwrap_or_default();
        let whose = format!("track {} ('{}')", i + 1, id);
        let problems = &mut planned.problems;
        if !safe_id(&id) {
            problems.push(format!(
                "{whose}: id must be 1-128 letters, digits, '-', '_' or '.'"
            ));
        } else if !seen.insert(id.clone()) {
            problems.push(format!("{whose}: duplicate id"));
        }
        let source = source.unwrap_or_default();
        if source.trim().is_empty() {
            problems.push(format!("{whose}: empty source"));
        }
        if album.as_ref().is_some_and(|a| a.trim().is_empty()) {
            problems.push(format!("{whose}: empty album name"));
        }
        let request = RenderRequest::from_layers(&[&self.defaults, &fields]);
        match request {
            Ok(request) => planned.tracks.push(TrackSpec {
                track: id,
                source,
                album,
                request,
            }),
            Err(e) => {
                // Its own fields are at fault, or it adds to the catalog's.
                if !catalog_refused || !fields.is_empty() {
                    problems.push(format!("{whose}: {e}"));
                }
                planned.unplanned.push((id, source));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopmind_dsp::planning::modes::Mode;

    #[test]
    fn every_problem_is_listed() {
        let m = Manifest::parse(
            br#"{"catalog": "bad/name", "targets": ["spotify", "nope"], "tracks": [
                {"id": "a", "source": "mixes/a.wav"},
                {"id": "a", "source": "mixes/b.wav"},
                {"id": "../c", "source": ""},
                {"id": "d", "source": "mixes/d.wav", "targets": ["cd", "cd"]},
                {"id": "e", "source": "mixes/e.wav", "targets": ["cd"], "dynamics": 7}
            ]}"#,
        )
        .unwrap();
        let e = m.plan().unwrap_err().0;
        let all = e.join("\n");
        for want in [
            "catalog 'bad/name'",
            "catalog: unknown target 'nope'",
            "duplicate id",
            "'../c'",
            "empty source",
            "target 'cd' listed twice",
            "track 5 ('e'): dynamics: 7 is outside 0..1",
        ] {
            assert!(all.contains(want), "missing '{want}' in:\n{all}");
        }
        // The catalog's problem is said once, not once per track.
        assert_eq!(all.matches("unknown target 'nope'").count(), 1, "{all}");
        let ok = Manifest::parse(
            br#"{"catalog": "c1", "targets": ["spotify"], "mode": "cinematic", "tracks": [
                {"id": "a", "source": "mixes/a.wav", "targets": ["cd"], "mode": "lo-fi"},
                {"id": "b", "source": "mixes/b.wav"}]}"#,
        )
        .unwrap()
        .plan()
        .unwrap();
        assert_eq!(ok[0].request.targets()[0].name, "cd");
        assert_eq!(ok[0].request.mode(), Mode::LoFi);
        assert_eq!(ok[1].request.targets()[0].name, "spotify");
        assert_eq!(ok[1].request.mode(), Mode::Cinematic);
        assert!(Manifest::parse(b"{\"catalog\": 1}").is_err());
        let unknown = Manifest::parse(
            br#"{"catalog": "c1", "targets": ["spotify"], "colour": "red",
                 "tracks": [{"id": "a", "source": "mixes/a.wav"}]}"#,
        )
        .unwrap()
        .plan()
        .unwrap_err()
        .0
        .join("\n");
        assert!(unknown.contains("unknown field `colour`"), "{unknown}");
    }

    #[test]
    fn reference_and_amount_come_from_the_catalog_or_the_track() {
        let ok = Manifest::parse(
            br#"{"catalog": "c1", "targets": ["spotify"], "reference": "refs/a.wav",
                 "amount": {"width": 0.5}, "tracks": [
                {"id": "a", "source": "mixes/a.wav"},
                {"id": "b", "source": "mixes/b.wav", "reference": "refs/b.flac"}]}"#,
        )
        .unwrap()
        .plan()
        .unwrap();
        assert_eq!(ok[0].request.reference(), Some("refs/a.wav"));
        assert_eq!(ok[1].request.reference(), Some("refs/b.flac"));
        let amount = ok[0].request.sliders().amount;
        assert_eq!((amount.width, amount.eq), (0.5, 1.0));
        let bad = Manifest::parse(
            br#"{"catalog": "c1", "targets": ["spotify"], "amount": {"eq": 3},
                 "tracks": [{"id": "a", "source": "mixes/a.wav"}]}"#,
        )
        .unwrap()
        .plan()
        .unwrap_err()
        .0
        .join("\n");
        assert!(bad.contains("amount.eq: 3 is outside 0..1"), "{bad}");
    }
}
