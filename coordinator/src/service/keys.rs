//! API keys: made by `loopmind keys create`, shown once, stored as their
//! SHA-256 (a key is 256 random bits, so a fast hash is enough), each
//! belonging to one tenant with a set of scopes.

use super::db::{now_ms, Db, DbError};
use super::ids::{new_id, random_bytes};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Upload audio and submit or cancel jobs.
    Submit,
    /// Read jobs, their outputs and events.
    Read,
    /// The service's own pages (/metrics).
    Admin,
}

impl Scope {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        Some(match s.trim() {
            "submit" => Scope::Submit,
            "read" => Scope::Read,
            "admin" => Scope::Admin,
            _ => return None,
        })
    }
}

/// A scope list that is not one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScopeError {
    #[error("unknown scope '{0}' (known: submit, read, admin)")]
    Unknown(String),
    #[error("no scope given (submit, read, admin)")]
    None,
}

/// Scopes from `submit,read,admin`; the error names the unknown one.
pub(crate) fn parse_scopes(list: &str) -> Result<Vec<Scope>, ScopeError> {
    let mut out = Vec::new();
    for s in list.split(',').filter(|s| !s.trim().is_empty()) {
        let scope = Scope::parse(s).ok_or_else(|| ScopeError::Unknown(s.trim().into()))?;
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    match out.is_empty() {
        true => Err(ScopeError::None),
        false => Ok(out),
    }
}

/// Who is calling: the key's tenant and scopes.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The key's id (what its rate limit is kept under).
    pub(crate) key_id: String,
    pub(crate) tenant: String,
    scopes: Vec<Scope>,
}

impl Caller {
    pub(crate) fn may(&self, s: Scope) -> bool {
        self.scopes.contains(&s)
    }
}

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Makes a key for `tenant`; returns the key itself (shown once).
pub(crate) async fn create(
    db: &Db,
    name: &str,
    tenant: &str,
    scopes: &[Scope],
) -> Result<String, DbError> {
    let key = format!("lm_{}", hex::encode(random_bytes::<32>()));
    let scopes: Vec<&str> = scopes.iter().map(|s| s.name()).collect();
    sqlx::query(
        "INSERT INTO api_keys (id, name, tenant, scopes, hash, created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id("key"))
    .bind(name)
    .bind(tenant)
    .bind(scopes.join(","))
    .bind(digest(&key))
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(key)
}

/// Keys recently found, by digest: most requests come from a few keys, and
/// each would otherwise cost a query. An entry is trusted for
/// [`Known::TTL`]; unknown keys are always asked of the database.
#[derive(Default)]
pub(crate) struct Known {
    found: std::sync::Mutex<std::collections::HashMap<String, (Caller, std::time::Instant)>>,
}

impl Known {
    const TTL: std::time::Duration = std::time::Duration::from_secs(10);
    /// Most keys remembered (then all are forgotten and found again).
    const MAX: usize = 10_000;

    /// The caller a presented key stands for, if it is one of ours.
    pub(crate) async fn caller(&self, db: &Db, presented: &str) -> Result<Option<Caller>, DbError> {
        let d = digest(presented);
        if let Some((c, at)) = self.found.lock().expect("keys lock").get(&d) {
            if at.elapsed() < Self::TTL {
                return Ok(Some(c.clone()));
            }
        }
        let found = caller(db, &d).await?;
        if let Some(c) = &found {
            let mut map = self.found.lock().expect("keys lock");
            if map.len() >= Self::MAX {
                map.clear();
            }
            map.insert(d, (c.clone(), std::time::Instant::now()));
        }
        Ok(found)
    }
}

/// The caller a key's digest stands for, if it is one of ours.
async fn caller(db: &Db, digest: &str) -> Result<Option<Caller>, DbError> {
    let row = sqlx::query("SELECT id, tenant, scopes FROM api_keys WHERE hash = $1")
        .bind(digest)
        .fetch_optional(&db.pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let scopes: String = row.try_get("scopes")?;
    Ok(Some(Caller {
        key_id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        scopes: scopes.split(',').filter_map(Scope::parse).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_refuse_by_name() {
        assert_eq!(
            parse_scopes("submit, read,read").unwrap(),
            vec![Scope::Submit, Scope::Read]
        );
        assert!(parse_scopes("submit,write")
            .unwrap_err()
            .to_string()
            .contains("'write'"));
        assert!(parse_scopes("").is_err());
    }
}
