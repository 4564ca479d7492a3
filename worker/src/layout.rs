//! Where outputs go. Every output path or key is made here, from parts that
//! were validated ([`safe_id`]) or made safe ([`safe_name`]); the folder store
//! refuses anything else ([`relative_key`]), so a name like `..` or
//! `a/../../b` can never reach outside the output folder or prefix.

/// The catalog name of `loopmind master`'s jobs.
pub const LOCAL_CATALOG: &str = "local";
/// A track's files beside its masters.
pub const REPORT: &str = "report.json";
pub const ERROR: &str = "error.json";
pub const SETTINGS: &str = "master_settings.json";
pub const PICTURE: &str = "loudness.png";
/// The job service's word that a job was cancelled: its worker drops it.
pub const CANCELLED: &str = "cancelled.json";
/// Longest track, catalog or target name, in bytes.
pub const MAX_NAME: usize = 128;
/// The most of one of LoopMind's own records (report.json, error.json,
/// running.json) read back: far more than it writes; a larger one was not
/// written by LoopMind and is treated as unreadable.
pub const MAX_RECORD_BYTES: u64 = 16 << 20;

/// A name usable as one path segment, a key part and a queue-name part:
/// ASCII letters, digits, `-`, `_`, `.`; not starting with a dot (so never
/// `.` or `..`); 1 to [`MAX_NAME`] bytes.
pub fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NAME
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Any text (a file's stem, say) made into a [`safe_id`]: other characters
/// become `_`, leading dots `_`, long names are cut, nothing becomes
/// `track`.
pub fn safe_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dots = s.len() - s.trim_start_matches('.').len();
    s.replace_range(..dots, &"_".repeat(dots));
    s.truncate(MAX_NAME);
    if s.is_empty() {
        s = "track".into();
    }
    debug_assert!(safe_id(&s), "{s}");
    s
}

/// The folder (key prefix, ending in `/`) of one track's outputs: `<track>/`
/// under `loopmind master --out`, `masters/<catalog>/<track>/` in a store.
pub fn track_prefix(catalog: &str, track: &str) -> String {
    if catalog == LOCAL_CATALOG {
        format!("{track}/")
    } else {
        format!("masters/{catalog}/{track}/")
    }
}

/// A target's master inside its track's folder.
pub fn master_file(target: &str) -> String {
    format!("{target}.wav")
}

/// A target's encoded deliverable: `<target>.<extension of the format>`.
pub fn encoded_file(target: &str, format: loopmind_dsp::targets::Format) -> String {
    format!("{target}.{}", crate::codec::extension(format))
}

/// A catalog's folder of shared outputs (its summary): `masters/<catalog>/`
/// in a store, the output folder itself under `loopmind master --out`.
pub fn catalog_prefix(catalog: &str) -> String {
    if catalog == LOCAL_CATALOG {
        String::new()
    } else {
        format!("masters/{catalog}/")
    }
}

/// Where the tries that want a track's outputs stake their claims
/// ([`crate::fence`]): outside the masters, which hold outputs only
/// (`claims/<catalog>/<track>/` in a store, `.loopmind-claims/<track>/`
/// under `loopmind master --out`).
pub fn claims_prefix(catalog: &str, track: &str) -> String {
    if catalog == LOCAL_CATALOG {
        format!(".loopmind-claims/{track}/")
    } else {
        format!("claims/{catalog}/{track}/")
    }
}

/// While a run holds a catalog: who holds it (host, pid, start), read by a
/// second run to name the first.
pub fn running_key(catalog: &str) -> String {
    format!("{}running.json", catalog_prefix(catalog))
}

/// The catalog of a tenant's jobs in the job service: `api.<tenant>`, so
/// its outputs are `masters/api.<tenant>/<job id>/`.
pub fn service_catalog(tenant: &str) -> String {
    debug_assert!(safe_id(tenant), "{tenant}");
    format!("api.{tenant}")
}

/// Where the job service keeps an uploaded mix: `uploads/<tenant>/<id>`.
pub fn upload_key(tenant: &str, upload_id: &str) -> String {
    debug_assert!(safe_id(tenant) && safe_id(upload_id));
    format!("uploads/{tenant}/{upload_id}")
}

/// Whether `key` stays inside the folder it is joined to: relative, and
/// made of segments that are neither empty, `.`, `..`, nor hold a NUL or a
/// backslash.
pub fn relative_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains(['\0', '\\']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_text_becomes_a_safe_name() {
        for (raw, want) in [
            ("..", "__"),
            (".", "_"),
            ("...", "___"),
            (".hidden", "_hidden"),
            ("a/b", "a_b"),
            ("a\0b", "a_b"),
            ("", "track"),
            ("Söng 1", "S_ng_1"),
            ("javascript:alert(1)", "javascript_alert_1_"),
            ("ok-name_1.2", "ok-name_1.2"),
        ] {
            assert_eq!(safe_name(raw), want, "{raw:?}");
            assert!(safe_id(&safe_name(raw)));
        }
        let long = "x".repeat(300);
        assert_eq!(safe_name(&long).len(), MAX_NAME);
        for bad in ["", "../x", "a/b", ".hidden", "a b", "é", "..", "."] {
            assert!(!safe_id(bad), "{bad}");
        }
    }

    #[test]
    fn keys_cannot_climb_out() {
        for good in ["a/report.json", "masters/c/t/preview/x-mix.wav", "x"] {
            assert!(relative_key(good), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "a//b",
            "./a",
            "a/.",
            "a\0b",
            "a\\..\\b",
        ] {
            assert!(!relative_key(bad), "{bad:?}");
        }
        assert_eq!(track_prefix(LOCAL_CATALOG, "t"), "t/");
        assert_eq!(track_prefix("cat", "t"), "masters/cat/t/");
    }
}
