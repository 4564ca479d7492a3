//! The job service's database: SQLite in the data directory (embedded) or
//! PostgreSQL (shared by replicas), through sqlx's `Any` driver with one set
//! of portable queries (`$n` parameters, which both read) and migrations
//! (coordinator/migrations).

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl DbError {
    /// A migration that does not apply stays so (abort); the rest is the
    /// database or the connection to it (retry).
    pub(crate) fn retryable(&self) -> bool {
        !matches!(self, DbError::Migrate(_))
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Clone)]
pub(crate) struct Db {
    pub(crate) pool: AnyPool,
}

impl Db {
    /// Opens (creating and migrating) the database: `url` if given, else
    /// SQLite at `<data>/loopmind.db`.
    pub(crate) async fn open(url: &str, data: &Path) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.is_empty();
        let url = match sqlite {
            true => format!("sqlite://{}?mode=rwc", data.join("loopmind.db").display()),
            false => url.to_string(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL's own durability: a commit survives the
                        // process dying (kill -9) at once; only a power cut
                        // can take the last moments' commits. Without it
                        // every commit waits for the disk (a submission
                        // took twice as long).
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        if sqlite {
            // Readers never wait for the one writer; kept in the file.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        MIGRATOR.run(&pool).await?;
        Ok(Db { pool })
    }

    /// Held while this process is the embedded renderer of the database:
    /// at start it queues again the jobs left `running`, which is only
    /// right when no other `serve` renders them. SQLite: a lock on a file
    /// beside the database; PostgreSQL: a session advisory lock, on a
    /// connection kept for the purpose. None when another holds it.
    pub(crate) async fn sole_renderer(&self, data: &Path) -> Result<Option<Owner>, DbError> {
        if self.pool.connect_options().database_url.scheme() == "sqlite" {
            let f = std::fs::File::create(data.join("serve.lock")).map_err(sqlx::Error::Io)?;
            return Ok(f.try_lock().is_ok().then_some(Owner::File(f)));
        }
        let mut conn = self.pool.acquire().await?.detach();
        let row = sqlx::query("SELECT pg_try_advisory_lock(7415000001) AS held")
            .fetch_one(&mut conn)
            .await?;
        Ok(row
            .try_get::<bool, _>("held")?
            .then_some(Owner::Session(conn)))
    }

    /// The named secret (URL signing), made once and shared by replicas.
    pub(crate) async fn secret(&self, name: &str) -> Result<String, DbError> {
        let fresh = hex::encode(super::ids::random_bytes::<32>());
        sqlx::query(
            "INSERT INTO service_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM service_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("value")?)
    }
}

/// Milliseconds since the epoch: the database's clock values.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An optional text column.
pub(crate) fn opt_text(row: &AnyRow, col: &str) -> Result<Option<String>, DbError> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}

/// What makes a process the database's embedded renderer, released when
/// dropped (or when the process dies).
#[allow(dead_code)] // Held, never read: dropping it lets go.
pub(crate) enum Owner {
    File(std::fs::File),
    Session(sqlx::AnyConnection),
}
