//! Album normalisation: one loudness offset for all of an album's tracks, so
//! their relative levels are kept while the album as a whole lands on target
//! (what streaming services do in album mode).

use loopmind_worker::job::{album_loudness, AlbumPlacement, Measurement};
use loopmind_worker::report::TrackReport;
use std::collections::{BTreeMap, HashMap};

/// Per album, what fixes its tracks' offsets: its name and its members'
/// sources (id and ETag), in a stable order.
pub fn keys<'a>(
    tracks: impl Iterator<Item = (Option<&'a str>, &'a str, &'a str)>,
) -> HashMap<String, String> {
    let mut members: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (album, id, etag) in tracks {
        if let Some(a) = album {
            members.entry(a).or_default().push(format!("{id}={etag}"));
        }
    }
    members
        .into_iter()
        .map(|(a, mut m)| {
            m.sort();
            (a.to_string(), format!("{a}:{}", m.join(",")))
        })
        .collect()
}

/// The input measurement a complete report already holds.
pub fn measurement_of(r: &TrackReport) -> Measurement {
    Measurement {
        integrated_lufs: r.input_loudness.integrated_lufs,
        duration_seconds: r.input.duration_seconds,
    }
}

/// Each measured member's offset from its album's loudness. `members` is
/// (track, album); tracks without a measurement (failed) are left out of
/// their album and get no placement.
pub fn offsets(
    members: &[(&str, &str)],
    measured: &HashMap<String, Measurement>,
) -> HashMap<String, AlbumPlacement> {
    let mut by_album: BTreeMap<&str, Vec<(&str, Measurement)>> = BTreeMap::new();
    for (track, album) in members {
        if let Some(m) = measured.get(*track) {
            by_album.entry(album).or_default().push((track, *m));
        }
    }
    let mut out = HashMap::new();
    for (album, mut tracks) in by_album {
        // Summed in one order: the same album gets the same offset to the
        // last bit, whatever order its members were listed in.
        tracks.sort_by(|a, b| a.0.cmp(b.0));
        let ms: Vec<Measurement> = tracks.iter().map(|(_, m)| *m).collect();
        let Some(level) = album_loudness(&ms) else {
            continue;
        };
        for (track, m) in tracks {
            out.insert(
                track.to_string(),
                AlbumPlacement {
                    album: album.to_string(),
                    lufs_offset: m.integrated_lufs - level,
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_keep_relative_levels_and_centre_the_album() {
        let m = |l, d| Measurement {
            integrated_lufs: l,
            duration_seconds: d,
        };
        let measured: HashMap<String, Measurement> = [
            ("a", m(-20.0, 60.0)),
            ("b", m(-14.0, 60.0)),
            ("c", m(-9.0, 30.0)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let o = offsets(
            &[("a", "x"), ("b", "x"), ("c", "y"), ("gone", "x")],
            &measured,
        );
        assert!(
            (o["b"].lufs_offset - o["a"].lufs_offset - 6.0).abs() < 1e-9,
            "relative level kept"
        );
        assert!(
            o["c"].lufs_offset.abs() < 1e-9,
            "a one-track album is its own level"
        );
        assert!(!o.contains_key("gone"));
        // The album's masters, shifted by their offsets, average to the target.
        let shifted: Vec<Measurement> = ["a", "b"]
            .iter()
            .map(|t| m(-14.0 + o[*t].lufs_offset, 60.0))
            .collect();
        assert!((album_loudness(&shifted).unwrap() + 14.0).abs() < 1e-9);
        let k = keys(
            [
                (Some("x"), "b", "e2"),
                (None, "z", "e9"),
                (Some("x"), "a", "e1"),
            ]
            .into_iter(),
        );
        assert_eq!(k["x"], "x:a=e1,b=e2");
        assert_eq!(k.len(), 1);
    }

    #[test]
    fn the_offset_does_not_depend_on_the_members_order() {
        let m = |l, d| Measurement {
            integrated_lufs: l,
            duration_seconds: d,
        };
        let measured: HashMap<String, Measurement> = [
            ("a", m(-20.123456789, 61.3)),
            ("b", m(-14.987654321, 187.7)),
            ("c", m(-9.31, 33.1)),
            ("d", m(-17.77, 241.9)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let orders = [
            ["a", "b", "c", "d"],
            ["d", "c", "b", "a"],
            ["c", "a", "d", "b"],
        ];
        let bits: Vec<u64> = orders
            .iter()
            .map(|o| {
                let members: Vec<(&str, &str)> = o.iter().map(|t| (*t, "x")).collect();
                offsets(&members, &measured)["a"].lufs_offset.to_bits()
            })
            .collect();
        assert!(bits.iter().all(|b| *b == bits[0]), "{bits:?}");
    }
}
