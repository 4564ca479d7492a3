//! The version of every document and message LoopMind writes: job messages,
//! results, `report.json`, `master_settings.json`, error reports and
//! summaries carry `"schema_version": 2`. A reader takes its own version and
//! older ones (a document without the field is version 1, written before it
//! existed) and refuses a newer one by name, so a mixed fleet during an
//! upgrade fails loudly instead of misreading a field.
//!
//! Version 2 gathered every render option into one request
//! ([`crate::request::RenderRequest`]): job messages and
//! `master_settings.json` of version 1 are migrated as they are read (see
//! their types); the other documents kept their shape.

use crate::error::Action;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The major version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 2;

/// A document's `schema_version` field: always written as
/// [`SCHEMA_VERSION`]; reading a newer one is an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchemaVersion;

impl Serialize for SchemaVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(SCHEMA_VERSION)
    }
}

impl<'de> Deserialize<'de> for SchemaVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if v > SCHEMA_VERSION {
            return Err(serde::de::Error::custom(NewerSchema { found: v.into() }));
        }
        Ok(SchemaVersion)
    }
}

/// A document a newer LoopMind wrote: this build would misread it, and
/// reading it again gives the same answer (abort; only an upgrade helps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "schema_version {found} is newer than this LoopMind reads ({}); upgrade LoopMind to read it",
    SCHEMA_VERSION
)]
pub struct NewerSchema {
    pub found: u64,
}

impl NewerSchema {
    pub fn action(&self) -> Action {
        Action::Abort
    }
}

/// The `schema_version` a document states (1 where it has none).
pub fn version_of(doc: &serde_json::Value) -> u64 {
    doc.get("schema_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(1)
}

/// Whether this build reads `doc`, by the version it states: a reader can
/// tell "newer" from any other reason a document does not parse.
pub fn readable(doc: &serde_json::Value) -> Result<(), NewerSchema> {
    match version_of(doc) {
        found if found > u64::from(SCHEMA_VERSION) => Err(NewerSchema { found }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Doc {
        #[serde(default)]
        schema_version: SchemaVersion,
        x: u32,
    }

    #[test]
    fn newer_versions_are_refused_by_name() {
        let text = serde_json::to_string(&Doc {
            schema_version: SchemaVersion,
            x: 1,
        })
        .unwrap();
        assert_eq!(text, r#"{"schema_version":2,"x":1}"#);
        assert!(serde_json::from_str::<Doc>(r#"{"x":1}"#).is_ok());
        assert!(serde_json::from_str::<Doc>(r#"{"schema_version":1,"x":1}"#).is_ok());
        let e = serde_json::from_str::<Doc>(r#"{"schema_version":3,"x":1}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("schema_version 3 is newer"), "{e}");
        let doc = |v| serde_json::json!({ "schema_version": v, "x": 1 });
        assert_eq!(readable(&doc(3)), Err(NewerSchema { found: 3 }));
        assert_eq!(readable(&doc(2)), Ok(()));
        assert_eq!(readable(&serde_json::json!({ "x": 1 })), Ok(()));
    }
}
