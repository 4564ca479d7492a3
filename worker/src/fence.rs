//! Run fencing: the one rule for every writer of a track's outputs (catalog
//! runs and the job service alike, since both run [`crate::process`]).
//!
//! Each catalog run has an id (the job id's `#<run>`, time-ordered) and each
//! try of a job an attempt id of its own. A try stakes a claim on the track
//! before it touches any output: an object of its own under
//! `layout::claims_prefix`, named by its run, a sequence number (one past
//! the highest of its run it saw) and its attempt. Stakes are only ever
//! added, never overwritten, so the holder is a pure function of which
//! stakes exist: the newest run's highest stake. No conditional write is
//! needed (Garage 2.5 ignores `If-None-Match`, measured by the tests), only
//! a listing that shows what was written before it, which S3, MinIO, R2,
//! Garage and a folder give.
//!
//! So a newer run's claim is never taken over: a try of an older run is
//! *superseded* and writes nothing. Before each write that replaces or
//! removes outputs (the masters, `error.json`, the report last), the try
//! checks that it still holds the track; a later try of the same job (a
//! duplicate delivery) that staked since leaves this one *taken over*, and
//! it writes nothing either. An older run's slow render never replaces a
//! newer run's masters, and a failed duplicate never deletes another try's
//! output. Two tries that stake at once both see both stakes, and agree.
//!
//! What is left: a try that passed its check and is uploading while a newer
//! try stakes, renders and uploads all before the first upload ends. The
//! newer try's report is written last and names its own masters.

use crate::job::Job;
use crate::layout;
use crate::store::{ObjectStore, StoreError};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// What a stake's object holds (its name says the same, for listing).
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

/// Most stakes read on one track: a holder removes the stakes below its
/// own, so more than this is not LoopMind's doing.
const MAX_STAKES: usize = 1000;

/// One try's stake, as its object's name says: `<run>.<seq>.<attempt>.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stake {
    run: String,
    seq: u64,
    attempt: String,
}

impl Stake {
    fn name(&self) -> String {
        format!("{}.{:012}.{}.json", self.run, self.seq, self.attempt)
    }

    /// A stake from an object's name; anything else under the prefix (a
    /// write in progress, an older LoopMind's file) is none.
    fn parse(name: &str) -> Option<Stake> {
        let mut parts = name.strip_suffix(".json")?.splitn(3, '.');
        let (run, seq, attempt) = (parts.next()?, parts.next()?, parts.next()?);
        let token =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !token(run) || !token(attempt) || seq.len() != 12 {
            return None;
        }
        Some(Stake {
            run: run.into(),
            seq: seq.parse().ok()?,
            attempt: attempt.into(),
        })
    }

    /// Newer run first, then the later try of a run, then (two tries that
    /// staked at once) the attempt id.
    fn cmp(&self, other: &Stake) -> Ordering {
        order(&self.run, &other.run)
            .then(self.seq.cmp(&other.seq))
            .then_with(|| self.attempt.cmp(&other.attempt))
    }
}

/// A try's hold on its track, once staked.
pub struct Fence {
    prefix: String,
    mine: Stake,
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
    crate::store::unique_id()
}

/// The stakes on the track now.
async fn stakes(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<Stake>, StoreError> {
    let keys = store.list(prefix, MAX_STAKES).await?;
    Ok(keys
        .iter()
        .filter_map(|k| Stake::parse(k.strip_prefix(prefix)?))
        .collect())
}

impl Fence {
    /// Stakes `job`'s track for the try `attempt`, unless a newer run holds
    /// it; whether this try holds it then is [`Fence::holds`].
    pub async fn claim(
        store: &dyn ObjectStore,
        job: &Job,
        attempt: &str,
    ) -> Result<Result<Fence, Fenced>, StoreError> {
        let prefix = layout::claims_prefix(&job.catalog, &job.track);
        let run = job.run().to_string();
        let now = stakes(store, &prefix).await?;
        if let Some(newer) = now
            .iter()
            .find(|s| order(&s.run, &run) == Ordering::Greater)
        {
            return Ok(Err(Fenced::Superseded(newer.run.clone())));
        }
        let seq = now
            .iter()
            .filter(|s| order(&s.run, &run) == Ordering::Equal)
            .map(|s| s.seq + 1)
            .max()
            .unwrap_or(0);
        let mine = Stake {
            run: run.clone(),
            seq,
            attempt: attempt.to_string(),
        };
        let body = Claim {
            schema_version: Default::default(),
            run,
            attempt: attempt.to_string(),
        };
        let key = format!("{prefix}{}", mine.name());
        store
            .put_bytes(&key, serde_json::to_vec(&body).expect("a claim serialises"))
            .await?;
        let fence = Fence { prefix, mine };
        if let Err(fenced) = fence.holds(store).await? {
            // Staked at the same moment as a newer run or a later try.
            let _ = store.delete(&key).await;
            return Ok(Err(fenced));
        }
        // Stakes below this one never hold again: tidied, best effort.
        for s in now.iter().filter(|s| s.cmp(&fence.mine) == Ordering::Less) {
            let _ = store.delete(&format!("{}{}", fence.prefix, s.name())).await;
        }
        Ok(Ok(fence))
    }

    /// Whether the track is still this try's: checked before every write
    /// that replaces or removes outputs.
    pub async fn holds(&self, store: &dyn ObjectStore) -> Result<Result<(), Fenced>, StoreError> {
        let now = stakes(store, &self.prefix).await?;
        let top = now.iter().max_by(|a, b| a.cmp(b));
        Ok(match top {
            Some(t) if *t == self.mine => Ok(()),
            Some(t) if order(&t.run, &self.mine.run) == Ordering::Greater => {
                Err(Fenced::Superseded(t.run.clone()))
            }
            _ => Err(Fenced::TakenOver),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stakes_read_back_and_order_runs_then_tries() {
        let s = |run: &str, seq: u64, attempt: &str| Stake {
            run: run.into(),
            seq,
            attempt: attempt.into(),
        };
        let a = s("18a0", 3, "18a0ff-12");
        assert_eq!(a.name(), "18a0.000000000003.18a0ff-12.json");
        assert_eq!(Stake::parse(&a.name()), Some(a.clone()));
        for junk in [
            "x.json",
            "18a0.3.a.json",
            ".18a0.000000000003.a.json.tmp",
            "a/b.000000000001.c.json",
        ] {
            assert_eq!(Stake::parse(junk), None, "{junk}");
        }
        assert_eq!(s("18a1", 0, "a").cmp(&s("18a0", 9, "z")), Ordering::Greater);
        assert_eq!(s("18a0", 2, "a").cmp(&s("18a0", 1, "z")), Ordering::Greater);
        assert_eq!(s("18a0", 1, "b").cmp(&s("18a0", 1, "a")), Ordering::Greater);
    }

    #[test]
    fn runs_are_ordered_by_their_time() {
        assert_eq!(order("18a0", "189f"), Ordering::Greater);
        assert_eq!(order("fff", "1000"), Ordering::Less);
        assert_eq!(order("1", "1"), Ordering::Equal);
        assert_eq!(order("api", "18a0"), Ordering::Equal);
    }
}
