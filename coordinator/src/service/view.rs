//! A job as stored (its row) and as the API shows it.

use super::db::{now_ms, opt_text, Db, DbError};
use super::seq::next_seq;
use super::App;
use loopmind_worker::job::{Job, JobResult};
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

pub(crate) const STATUSES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

/// An album track's pass due (`jobs.album_stage`, see `albums`).
pub(crate) mod stage {
    /// Its measure job goes out first.
    pub(crate) const MEASURE: &str = "measure";
    /// Measured: queued, but not taken until its album is measured.
    pub(crate) const WAIT: &str = "wait";
    /// Its message carries the album's offset.
    pub(crate) const RENDER: &str = "render";
}

/// A job's row.
pub(crate) struct JobRow {
    pub(crate) id: String,
    seq: i64,
    pub(crate) status: String,
    pub(crate) body_hash: String,
    body: String,
    message: String,
    progress: f64,
    result: Option<String>,
    error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    batch_id: Option<String>,
    track: Option<String>,
    album: Option<String>,
    album_stage: Option<String>,
}

const COLUMNS: &str = "id, seq, status, body_hash, body, message, progress, result, error, \
     created_ms, updated_ms, batch_id, track, album, album_stage";

fn read(row: &AnyRow) -> Result<JobRow, DbError> {
    Ok(JobRow {
        id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        status: row.try_get("status")?,
        body_hash: row.try_get("body_hash")?,
        body: row.try_get("body")?,
        message: row.try_get("message")?,
        progress: row.try_get("progress")?,
        result: opt_text(row, "result")?,
        error: opt_text(row, "error")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        batch_id: opt_text(row, "batch_id")?,
        track: opt_text(row, "track")?,
        album: opt_text(row, "album")?,
        album_stage: opt_text(row, "album_stage")?,
    })
}

pub(crate) struct NewJob<'a> {
    pub(crate) id: &'a str,
    pub(crate) tenant: &'a str,
    pub(crate) idempotency_key: Option<&'a str>,
    pub(crate) body_hash: &'a str,
    pub(crate) body: &'a str,
    pub(crate) message: &'a str,
    /// The message's own id (`Job::job_id`): how results name the job.
    pub(crate) message_id: &'a str,
    /// Also put the message in the outbox, for the relay to publish
    /// (`service.render = "queue"`).
    pub(crate) outbox: bool,
    /// A batch's job: (the batch's id, the track's id in it).
    pub(crate) batch: Option<(&'a str, &'a str)>,
    /// An album's track: measured first (`albums`).
    pub(crate) album: Option<FirstPass<'a>>,
}

/// An album track's first pass: its album and its measure job's message.
pub(crate) struct FirstPass<'a> {
    pub(crate) album: &'a str,
    pub(crate) message_id: &'a str,
    pub(crate) message: &'a str,
}

/// Inserts a queued job, and its message into the outbox when it goes to
/// the queue (its event is the caller's to record, in the same
/// transaction).
pub(crate) async fn insert(tx: &mut AnyConnection, j: &NewJob<'_>) -> Result<JobRow, DbError> {
    let now = now_ms();
    let seq = next_seq();
    let (batch, track) = j.batch.unzip();
    sqlx::query(
        "INSERT INTO jobs (id, seq, tenant, idempotency_key, body_hash, body, message, status, progress, attempts, created_ms, updated_ms, batch_id, track, message_id, album, album_stage) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', 0, 0, $8, $8, $9, $10, $11, $12, $13)",
    )
    .bind(j.id)
    .bind(seq)
    .bind(j.tenant)
    .bind(j.idempotency_key)
    .bind(j.body_hash)
    .bind(j.body)
    .bind(j.message)
    .bind(now)
    .bind(batch)
    .bind(track)
    .bind(j.album.as_ref().map_or(j.message_id, |a| a.message_id))
    .bind(j.album.as_ref().map(|a| a.album))
    .bind(j.album.as_ref().map(|_| stage::MEASURE))
    .execute(&mut *tx)
    .await?;
    if j.outbox {
        let (message_id, message) = match &j.album {
            Some(a) => (a.message_id, a.message),
            None => (j.message_id, j.message),
        };
        super::outbox::put(tx, j.id, message_id, message).await?;
    }
    // The row as written (no read back on the submission's path).
    Ok(JobRow {
        id: j.id.to_string(),
        seq,
        status: "queued".into(),
        body_hash: j.body_hash.to_string(),
        body: j.body.to_string(),
        message: j.message.to_string(),
        progress: 0.0,
        result: None,
        error: None,
        created_ms: now,
        updated_ms: now,
        batch_id: batch.map(String::from),
        track: track.map(String::from),
        album: j.album.as_ref().map(|a| a.album.to_string()),
        album_stage: j.album.as_ref().map(|_| stage::MEASURE.to_string()),
    })
}

pub(crate) async fn by_id(db: &Db, tenant: &str, id: &str) -> Result<Option<JobRow>, DbError> {
    let q = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1 AND tenant = $2");
    let row = sqlx::query(&q)
        .bind(id)
        .bind(tenant)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(read).transpose()
}

/// For a signed download, whose URL is the proof of who may read it.
pub(crate) async fn by_id_any_tenant(db: &Db, id: &str) -> Result<Option<JobRow>, DbError> {
    let q = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
    let row = sqlx::query(&q).bind(id).fetch_optional(&db.pool).await?;
    row.as_ref().map(read).transpose()
}

pub(crate) async fn by_key(db: &Db, tenant: &str, key: &str) -> Result<Option<JobRow>, DbError> {
    let q = format!("SELECT {COLUMNS} FROM jobs WHERE tenant = $1 AND idempotency_key = $2");
    let row = sqlx::query(&q)
        .bind(tenant)
        .bind(key)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(read).transpose()
}

/// Which of a tenant's jobs a page lists.
#[derive(Default)]
pub(crate) struct Filter<'a> {
    pub(crate) status: Option<&'a str>,
    pub(crate) batch: Option<&'a str>,
}

/// A page of the tenant's jobs in creation order, after `after` (seq, id).
pub(crate) async fn page(
    db: &Db,
    tenant: &str,
    filter: Filter<'_>,
    after: Option<(i64, String)>,
    limit: u32,
) -> Result<Vec<JobRow>, DbError> {
    let (seq, id) = after.unwrap_or((i64::MIN, String::new()));
    let q = format!(
        "SELECT {COLUMNS} FROM jobs WHERE tenant = $1 AND ($2 = '' OR status = $2) \
         AND ($6 = '' OR batch_id = $6) \
         AND (seq > $3 OR (seq = $3 AND id > $4)) ORDER BY seq, id LIMIT $5"
    );
    let rows = sqlx::query(&q)
        .bind(tenant)
        .bind(filter.status.unwrap_or(""))
        .bind(seq)
        .bind(id)
        .bind(limit as i64)
        .bind(filter.batch.unwrap_or(""))
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(read).collect()
}

pub(crate) fn cursor_of(r: &JobRow) -> String {
    format!("{}.{}", r.seq, r.id)
}

pub(crate) fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (seq, id) = c.split_once('.')?;
    Some((seq.parse().ok()?, id.to_string()))
}

pub(crate) fn file_path(job: &str, name: &str) -> String {
    format!("/v1/jobs/{job}/files/{name}")
}

fn message(r: &JobRow) -> Option<Job> {
    serde_json::from_str(&r.message).ok()
}

fn result(r: &JobRow) -> Option<JobResult> {
    r.result
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
}

/// The files a finished job wrote: (target or "" for the track's own, name).
fn outputs(res: &JobResult) -> Vec<(String, String)> {
    let Some(report) = &res.report else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in ["report.json", "master_settings.json", "loudness.png"] {
        out.push((String::new(), f.to_string()));
    }
    for t in &report.targets {
        if t.withheld.is_none() {
            out.push((t.target.clone(), t.output_file.clone()));
            out.extend(t.files.iter().map(|f| (t.target.clone(), f.file.clone())));
        }
    }
    out
}

/// Where the job's cancel marker goes (the workers look for it).
pub(crate) fn cancel_marker(message: &str) -> Option<String> {
    let job: Job = serde_json::from_str(message).ok()?;
    Some(job.output_key(loopmind_worker::layout::CANCELLED))
}

/// The job's message as stored.
pub(crate) fn message_text(r: &JobRow) -> &str {
    &r.message
}

/// The store key of output `name` of the job, if the job wrote it.
pub(crate) fn output_key(r: &JobRow, name: &str) -> Option<String> {
    let res = result(r)?;
    let job = message(r)?;
    outputs(&res)
        .iter()
        .any(|(_, n)| n == name)
        .then(|| job.output_key(name))
}

/// The job as the API shows it.
pub(crate) fn job(r: &JobRow, app: &App) -> Value {
    let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    let mut v = json!({
        "id": r.id,
        "status": r.status,
        "progress": r.progress,
        "created_at": rfc3339(r.created_ms),
        "updated_at": rfc3339(r.updated_ms),
        "input": body.get("input"),
        "batch": r.batch_id,
        "track": r.track,
        "request": message(r).map(|j| j.request),
    });
    if let Some(name) = &r.album {
        // The offset once the album is measured (the render's message carries it).
        let offset = message(r).and_then(|j| j.album).map(|a| a.lufs_offset);
        v["album"] = json!({"name": name, "stage": r.album_stage, "lufs_offset": offset});
    }
    if let Some(res) = result(r).filter(|_| r.status != "cancelled") {
        v["targets"] = targets(r, &res, app);
        v["files"] = files(r, &res, app, "");
        if let Some(e) = &res.error {
            v["error"] = json!({"code": if res.reason.is_empty() { "render_failed" } else { res.reason.as_str() },
                "message": e.error, "retryable": e.action == loopmind_worker::Action::Retry});
        }
    }
    if let Some(e) = r
        .error
        .as_deref()
        .and_then(|e| serde_json::from_str::<Value>(e).ok())
    {
        v["error"] = e;
    }
    v
}

fn targets(r: &JobRow, res: &JobResult, app: &App) -> Value {
    let Some(report) = &res.report else {
        return json!([]);
    };
    let list: Vec<Value> = report
        .targets
        .iter()
        .map(|t| {
            json!({
                "target": t.target, "target_lufs": t.target_lufs, "ceiling_dbtp": t.ceiling_dbtp,
                "integrated_lufs": t.integrated_lufs, "true_peak_dbtp": t.true_peak_dbtp,
                "lra_lu": t.lra_lu, "codecs": t.codecs, "withheld": t.withheld,
                "files": files(r, res, app, &t.target),
            })
        })
        .collect();
    json!(list)
}

fn files(r: &JobRow, res: &JobResult, app: &App, target: &str) -> Value {
    let expires = now_ms() + (app.settings.url_ttl_s * 1000) as i64;
    let list: Vec<Value> = outputs(res)
        .into_iter()
        .filter(|(t, _)| t == target)
        .map(|(_, name)| {
            let url = app.signer.url("GET", &file_path(&r.id, &name), expires);
            json!({"name": name, "url": url, "expires_at": rfc3339(expires)})
        })
        .collect();
    json!(list)
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-12-04T18:00:00.000Z`).
pub(crate) fn rfc3339(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        // 2026-12-04T17:52:44.250Z
        assert_eq!(rfc3339(1_796_406_764_250), "2026-12-04T17:52:44.250Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn cursors_read_back() {
        assert_eq!(parse_cursor("17.job_ab"), Some((17, "job_ab".into())));
        assert_eq!(parse_cursor("x.job"), None);
    }
}
