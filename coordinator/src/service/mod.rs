//! `loopmind serve`: the job service a label's backend calls over HTTP.
//!
//! Embedded (the default): SQLite and a folder store under `--data`, jobs
//! rendered by in-process workers (render children, as everywhere).
//! Distributed (`service.render = "queue"`): jobs go to RabbitMQ through an
//! outbox, the `loopmind worker`s render them from the shared `[store]`,
//! results come back into the database (PostgreSQL lets several replicas
//! share it).
//!
//! - `db`: the database (SQLite | PostgreSQL, one set of queries, migrations).
//! - `ids`: random ids and secrets; `seq`: rows' creation order.
//! - `keys`: API keys, tenants, scopes; `auth`: the caller of a request.
//! - `signing`: signed upload and download URLs.
//! - `batches`: a catalog submitted at once, its jobs in one transaction;
//!   `albums`: its albums' two passes (measure, then render with the
//!   album's shared offset).
//! - `uploads`: `POST /v1/uploads`, the signed PUT streamed to the store.
//! - `jobs`: submit (idempotent), read, list, cancel, outputs; `view` shapes
//!   a job for the API.
//! - `executor`: the embedded workers: the database is their queue, each
//!   job run by the worker's own step (`work_on`).
//! - `outbox`, `results` (`service.render = "queue"`): jobs' messages
//!   relayed from the database to RabbitMQ, what workers say recorded back.
//! - `events`: every status change recorded; `GET /v1/events` streams them (SSE).
//! - `webhooks`: endpoints, messages owed, the signed sender with retries.
//! - `metrics`: `/metrics` for admin keys; `openapi`: the contract at
//!   `/v1/openapi.json`, made from the router and the handlers.
//! - `error`: the API's error body.

mod albums;
mod auth;
mod batches;
mod db;
mod error;
mod events;
mod executor;
mod ids;
mod jobs;
mod keys;
mod metrics;
mod openapi;
mod outbox;
mod results;
mod seq;
mod signing;
mod uploads;
mod view;
mod webhooks;

use anyhow::{Context, Result};
use axum::routing::get;
use axum::Router;
use loopmind_worker::config::{ServiceRender, ServiceSettings, Settings, StoreKind};
use loopmind_worker::store::{FolderStore, ObjectStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What every handler is given.
pub(crate) struct App {
    db: db::Db,
    signer: signing::Signer,
    store: Arc<dyn ObjectStore>,
    /// The folder store's root (embedded): outputs are served from it.
    store_root: PathBuf,
    /// The S3 store's bucket (queue-shaped): where `input.url` may point.
    store_bucket: Option<String>,
    settings: ServiceSettings,
    limits: auth::Limits,
    known: keys::Known,
    /// The embedded workers' render metrics (served at `/metrics`).
    render_metrics: Arc<loopmind_worker::metrics::Metrics>,
    /// Wakes the embedded workers when a job is queued.
    queued: Arc<tokio::sync::Notify>,
}

pub(crate) type State = axum::extract::State<Arc<App>>;

impl App {
    /// Jobs go to the queue for the `loopmind worker`s.
    pub(crate) fn queue_shaped(&self) -> bool {
        self.settings.render == ServiceRender::Queue
    }

    /// How long a URL the store signs stays good: `service.url_ttl_s`, up
    /// to the week S3's signatures allow.
    pub(crate) fn presign_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.settings.url_ttl_s.min(7 * 86_400))
    }
}

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The service's data: its SQLite database and stored audio.
    #[arg(long, default_value = "./loopmind-data")]
    data: PathBuf,
    /// Settings file (TOML); LOOPMIND_* environment variables override it.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Make a key; it is printed once and stored only hashed.
    Create {
        #[arg(long)]
        name: String,
        /// The tenant whose jobs the key sees (default: the name).
        #[arg(long)]
        tenant: Option<String>,
        /// Comma-separated: submit, read, admin.
        #[arg(long, default_value = "submit,read")]
        scope: String,
        /// The service's data directory (as `serve --data`).
        #[arg(long, default_value = "./loopmind-data")]
        data: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `loopmind keys create`: prints the new key.
pub(crate) async fn keys(cmd: KeysCommand) -> Result<()> {
    let KeysCommand::Create {
        name,
        tenant,
        scope,
        data,
        config,
    } = cmd;
    let tenant = tenant.unwrap_or_else(|| name.clone());
    anyhow::ensure!(
        loopmind_worker::layout::safe_id(&tenant),
        "tenant '{tenant}' is not a safe name (letters, digits, - _ . up to 128 bytes)"
    );
    let scopes = keys::parse_scopes(&scope)?;
    let s = Settings::load(config.as_deref())?;
    let db = open_db(&s.service, &data).await?;
    let key = keys::create(&db, &name, &tenant, &scopes).await?;
    println!("{key}");
    eprintln!("key '{name}' for tenant '{tenant}' made; it is shown only now");
    Ok(())
}

async fn open_db(s: &ServiceSettings, data: &Path) -> Result<db::Db> {
    std::fs::create_dir_all(data).with_context(|| format!("{}", data.display()))?;
    Ok(db::Db::open(&s.database_url, data).await?)
}

/// `loopmind serve`: runs until SIGTERM or Ctrl-C.
pub(crate) async fn serve(args: ServeArgs, s: Settings) -> Result<()> {
    anyhow::ensure!(
        loopmind_worker::layout::safe_id(&s.service.catalog),
        "service.catalog '{}' is not a safe name (letters, digits, - _ . up to 128 bytes)",
        s.service.catalog
    );
    let db = open_db(&s.service, &args.data).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let public = match s.service.public_url.is_empty() {
        true => format!("http://{addr}"),
        false => s.service.public_url.clone(),
    };
    let (store, store_root) = open_store(&s, &args.data).await?;
    let app = Arc::new(App {
        signer: signing::Signer::new(&db.secret("url-signing").await?, &public),
        db,
        store,
        store_root,
        store_bucket: (s.service.render == ServiceRender::Queue && s.store.kind == StoreKind::S3)
            .then(|| s.store.bucket.clone()),
        settings: s.service.clone(),
        limits: auth::Limits::new(s.service.rate_per_s, s.service.rate_burst),
        known: keys::Known::default(),
        render_metrics: Arc::new(loopmind_worker::metrics::Metrics::new()),
        queued: Arc::new(tokio::sync::Notify::new()),
    });
    let shutdown = loopmind_worker::shutdown::Shutdown::on_signals();
    let mut tasks = tokio::task::JoinSet::new();
    let workers = match app.queue_shaped() {
        true => {
            // Albums a replica that died measured but did not open.
            albums::sweep(&app).await?;
            tasks.spawn(outbox::run(app.clone(), s.clone(), shutdown.clone()));
            tasks.spawn(results::run(app.clone(), s.clone(), shutdown.clone()));
            None
        }
        false => {
            let owner = app.db.sole_renderer(&args.data).await?;
            anyhow::ensure!(
                owner.is_some(),
                "another `loopmind serve` renders this database's jobs (embedded shape); \
                 several replicas need service.render = \"queue\""
            );
            Some((
                executor::start(app.clone(), &s, &args.data, shutdown.clone()).await?,
                owner,
            ))
        }
    };
    tasks.spawn(webhooks::run(app.clone(), shutdown.clone()));
    tracing::info!(%addr, public = %public, "serving the job API");
    let mut stop = shutdown.clone();
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async move { stop.wait().await })
        .await?;
    if let Some((w, _owner)) = workers {
        w.stop().await;
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The store audio goes to, and the folder uploads are received into (a
/// folder store's own root, whose files are served from it).
async fn open_store(s: &Settings, data: &Path) -> Result<(Arc<dyn ObjectStore>, PathBuf)> {
    if s.service.render == ServiceRender::Embedded {
        let root = data.join("store");
        std::fs::create_dir_all(&root)?;
        return Ok((Arc::new(FolderStore::new(&root)), root));
    }
    let store = loopmind_worker::store::open(&s.store).await?;
    let root = match s.store.kind {
        StoreKind::Local => s.store.root.clone(),
        StoreKind::S3 => data.join("incoming"),
    };
    std::fs::create_dir_all(&root)?;
    Ok((store, root))
}

fn router(app: Arc<App>) -> Router {
    use axum::extract::DefaultBodyLimit;
    use utoipa::OpenApi;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let body_limit = (app.settings.body_max_kib * 1024) as usize;
    let batch_limit = (app.settings.batch_body_max_kib * 1024) as usize;
    let (schemas, paths, put) = routes!(uploads::put_data);
    // Streamed to disk under its own limit (service.upload_max_bytes).
    let put_data = (schemas, paths, put.layer(DefaultBodyLimit::disable()));
    let (schemas, paths, post) = routes!(batches::submit);
    let batch = (
        schemas,
        paths,
        post.layer(DefaultBodyLimit::max(batch_limit)),
    );
    let (router, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics::scrape))
        .routes(routes!(jobs::targets))
        .routes(routes!(events::stream))
        .routes(routes!(webhooks::create))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(uploads::create))
        .routes(put_data)
        .routes(batch)
        .routes(routes!(batches::show))
        .routes(routes!(batches::cancel))
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::show))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::file))
        .split_for_parts();
    let doc = Arc::new(openapi::document(doc));
    router
        .route(
            "/v1/openapi.json",
            get(move || async move { axum::Json((*doc).clone()) }),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
}

/// Open to all: whether the service answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "ok", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}
