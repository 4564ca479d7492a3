//! Run fencing: the one rule for every writer of a track's outputs (catalog
//! runs and the job service alike, since both run [`crate::process`]).
//!
//! Each catalog run has an id (the job id's `#<run>`, time-ordered) and each
//! try of a job an attempt id of its own. A try claims the track before it
//! touches any output: the claim (`layout::claim_key`) names the run and
//! the attempt, and is written with a conditional write where the store
//! holds one, so two tries never both believe they hold it. A claim of a
//! newer run is never taken over: that try is *superseded* and writes
//! nothing. Before each write that replaces or removes outputs (the
//! masters, `error.json`, the report last), the try checks that the claim
//! is still its own; a later try of the same job (a duplicate delivery)
//! that claimed since leaves this one *taken over*, and it writes nothing
//! either. So an older run's slow render never replaces a newer run's
//! masters, and a failed duplicate never deletes another try's output.
//!
//! What is left: a try that passed its check and is uploading while a newer
//! try claims, renders and uploads all before the first upload ends. The
//! newer try's report is written last and names its own masters.

use crate::job::Job;
use crate::layout;
use crate::store::{ObjectStore, StoreError};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// A claim on a track's outputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    #[serde(default)]
    pub schema_version: crate::schema::SchemaVersion,
    pub run: String,
    pub attempt: String,
}

/// Why a try may not write the track's outputs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    #[error("superseded by the newer run {0} of this catalog: nothing written")]
    Superseded(String),
    #[error("taken over by another try of the same job: nothing written")]
    TakenOver,
}

/// A try's hold on its track, once claimed.
pub struct Fence {
    key: String,
    mine: Claim,
}

/// Runs in order: ids are time-ordered hex numbers, so a longer id is the
/// newer one, and equal lengths compare as text; ids that are not hex (the
/// job service's) are all the same run.
fn order(a: &str, b: &str) -> Ordering {
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    if !hex(a) || !hex(b) {
        return Ordering::Equal;
    }
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// A new attempt id: unique per try (the time and the process).
pub fn attempt_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", std::process::id())
}

/// The claim now on `key` and its ETag; an unreadable claim counts as none
/// (it is replaced).
async fn read(store: &dyn ObjectStore, key: &str) -> Result<Option<(Claim, String)>, StoreError> {
    let Some(meta) = store.head(key).await? else {
        return Ok(None);
    };
    let bytes = store.get_bytes(key, layout::MAX_RECORD_BYTES).await?;
    let claim = bytes.and_then(|b| serde_json::from_slice::<Claim>(&b).ok());
    Ok(Some((
        claim.unwrap_or(Claim {
            schema_version: Default::default(),
            run: String::new(),
            attempt: String::new(),
        }),
        meta.etag,
    )))
}

impl Fence {
    /// Claims `job`'s track for the try `attempt`, unless a newer run holds it.
    pub async fn claim(
        store: &dyn ObjectStore,
        job: &Job,
        attempt: &str,
    ) -> Result<Result<Fence, Fenced>, StoreError> {
        let key = layout::claim_key(&job.catalog, &job.track);
        let mine = Claim {
            schema_version: Default::default(),
            run: job.run().to_string(),
            attempt: attempt.to_string(),
        };
        let body = serde_json::to_vec(&mine).expect("a claim serialises");
        // A conditional write that loses a race reads again: a few rounds.
        for _ in 0..5 {
            let now = read(store, &key).await?;
            if let Some((held, _)) = &now {
                if order(&held.run, &mine.run) == Ordering::Greater {
                    return Ok(Err(Fenced::Superseded(held.run.clone())));
                }
            }
            let seen = now.as_ref().map(|(_, etag)| etag.as_str());
            if store.put_bytes_if(&key, body.clone(), seen).await? {
                return Ok(Ok(Fence { key, mine }));
            }
        }
        Err(StoreError::Transient {
            what: store.describe(&key),
            reason: "the claim kept changing under this try".into(),
        })
    }

    /// Whether the claim is still this try's: checked before every write
    /// that replaces or removes outputs.
    pub async fn holds(&self, store: &dyn ObjectStore) -> Result<Result<(), Fenced>, StoreError> {
        Ok(match read(store, &self.key).await? {
            Some((held, _)) if held == self.mine => Ok(()),
            Some((held, _)) if order(&held.run, &self.mine.run) == Ordering::Greater => {
                Err(Fenced::Superseded(held.run))
            }
            _ => Err(Fenced::TakenOver),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_ordered_by_their_time() {
        assert_eq!(order("18a0", "189f"), Ordering::Greater);
        assert_eq!(order("fff", "1000"), Ordering::Less);
        assert_eq!(order("1", "1"), Ordering::Equal);
        assert_eq!(order("api", "18a0"), Ordering::Equal);
    }
}
