//! Settings for the distributed pipeline: built-in defaults, then a TOML file
//! (`--config FILE`), then environment variables (`LOOPMIND_QUEUE__URL`,
//! `LOOPMIND_STORE__BUCKET`, ...: prefix `LOOPMIND_`, sections split by `__`).
//! Validated once at start; every error names its key. S3 credentials are not
//! settings: they come from the standard AWS environment / credential chain.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub queue: QueueSettings,
    pub store: StoreSettings,
    pub worker: WorkerSettings,
    pub render: RenderSettings,
    pub coordinator: CoordinatorSettings,
    pub service: ServiceSettings,
    pub log: LogSettings,
}

/// The job service (`loopmind serve`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceSettings {
    /// Who renders: `embedded` (workers in this process; audio in a folder
    /// under `--data`) or `queue` (jobs published to `queue.jobs` for the
    /// `loopmind worker`s; audio in the `[store]` they share).
    pub render: ServiceRender,
    /// The catalog the service's results and dead letters come back under
    /// (`loopmind.results.<catalog>`, `loopmind.dead.<catalog>`): one per
    /// service sharing a broker, the same for its replicas.
    pub catalog: String,
    /// The database: empty for SQLite in the data directory, or a
    /// `postgres://` URL shared by several `serve` replicas.
    pub database_url: String,
    /// The address clients reach the service at (`https://mastering.example`),
    /// used in the upload and download URLs it hands out; empty: the
    /// address it listens on.
    pub public_url: String,
    /// Largest upload, in bytes (default 16 GiB: a 3-hour 24-bit stereo
    /// WAV at 192 kHz is 12.4 GB).
    pub upload_max_bytes: u64,
    /// How long an upload or download URL stays valid, in seconds.
    pub url_ttl_s: u64,
    /// Largest JSON body of a request, in KiB.
    pub body_max_kib: u64,
    /// Most tracks in one batch (`POST /v1/batches`).
    pub batch_max_tracks: u64,
    /// Largest body of a batch, in KiB.
    pub batch_body_max_kib: u64,
    /// Requests a second one key may make, sustained (429 past it); 0: no
    /// limit. Each replica counts its own.
    pub rate_per_s: u32,
    /// Requests one key may make at once, above the sustained rate.
    pub rate_burst: u32,
    /// Jobs rendered at once by the embedded workers; 0: one per core.
    pub workers: usize,
    /// Seconds between a webhook message's attempts, comma-separated: after
    /// the last one fails it is given up (the default spans ~26 hours).
    pub webhook_retry_s: String,
    /// Per tenant, the one place a job may name its mix by URL
    /// (`input.url`, `s3://bucket/prefix/`, in the store's bucket): a
    /// tenant without one uploads its mixes.
    pub input_prefixes: std::collections::BTreeMap<String, String>,
    /// Webhook URLs may reach private, loopback and link-local addresses
    /// (a backend on the same network); off, such a URL is refused, checked
    /// on every address it resolves to when a message is sent.
    pub webhooks_allow_private: bool,
}

/// Who renders the job service's jobs.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServiceRender {
    #[default]
    Embedded,
    Queue,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            render: ServiceRender::Embedded,
            catalog: "api".into(),
            database_url: String::new(),
            public_url: String::new(),
            upload_max_bytes: 16 << 30,
            url_ttl_s: 3600,
            body_max_kib: 1024,
            batch_max_tracks: 10_000,
            batch_body_max_kib: 16 * 1024,
            rate_per_s: 100,
            rate_burst: 500,
            workers: 0,
            webhook_retry_s: "5,60,300,1800,7200,14400,28800,43200".into(),
            webhooks_allow_private: false,
            input_prefixes: Default::default(),
        }
    }
}

impl ServiceSettings {
    /// The webhook retry schedule, in seconds (checked at load).
    pub fn webhook_retries(&self) -> Vec<u64> {
        self.webhook_retry_s
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let parts: Vec<&str> = self.webhook_retry_s.split(',').collect();
        if parts.len() > 32
            || parts
                .iter()
                .any(|p| p.trim().parse::<u64>().map_or(true, |s| s > 86_400))
        {
            return bad(
                "service.webhook_retry_s",
                "must be 1 to 32 comma-separated whole seconds, each at most 86400",
            );
        }
        let url = &self.database_url;
        if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return bad(
                "service.database_url",
                "must be empty (SQLite) or a postgres:// URL",
            );
        }
        if let Some((t, _)) = self
            .input_prefixes
            .iter()
            .find(|(_, p)| !(p.starts_with("s3://") && p.ends_with('/') && p.len() > 6))
        {
            return bad(
                "service.input_prefixes",
                &format!("{t}: must be an s3://bucket/prefix/ URL ending in /"),
            );
        }
        let p = &self.public_url;
        if !(p.is_empty() || p.starts_with("http://") || p.starts_with("https://")) {
            return bad("service.public_url", "must be an http:// or https:// URL");
        }
        for (key, v) in [
            ("service.upload_max_bytes", self.upload_max_bytes),
            ("service.url_ttl_s", self.url_ttl_s),
            ("service.body_max_kib", self.body_max_kib),
            ("service.batch_max_tracks", self.batch_max_tracks),
            ("service.batch_body_max_kib", self.batch_body_max_kib),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1");
            }
        }
        Ok(())
    }
}

/// How a catalog run waits for its jobs (`loopmind coordinator` and
/// `loopmind master` alike).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorSettings {
    /// A job with no result this long after a worker first took it is
    /// reported as timed out, not waited for, in seconds (a render's own
    /// deadline is `render.deadline_s`; this adds download, upload and
    /// every retry: later tries do not restart it).
    pub job_deadline_s: u64,
    /// With no job running and no word from any worker for this long, the
    /// jobs nobody took are reported as timed out, in seconds.
    pub idle_timeout_s: u64,
    /// How long the summary's write is retried while the store does not
    /// answer, in seconds.
    pub summary_retry_s: u64,
    /// The largest catalog manifest read, in MiB (about 3,000 tracks of
    /// typical entries per MiB); a larger one is refused unread.
    pub max_manifest_mib: u64,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            job_deadline_s: 2 * 3600,
            idle_timeout_s: 3600,
            summary_retry_s: 900,
            max_manifest_mib: 64,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// AMQP URL; may hold credentials, so it is never logged whole.
    pub url: String,
    /// The durable quorum queue jobs go to and workers consume.
    pub jobs: String,
    /// Jobs a worker holds unacknowledged at once.
    pub prefetch: u16,
    /// Deliveries of one job before it is dead-lettered (a poison job, or
    /// one that kills its worker every time).
    pub delivery_limit: u32,
    /// How long a delivery may stay unacknowledged (a render in progress)
    /// before the broker gives up on the consumer.
    pub consumer_timeout_ms: u64,
    /// A catalog's results and dead-letter queues expire after this long
    /// unused (its coordinator died and was not run again), in seconds.
    pub catalog_expiry_s: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            jobs: "loopmind.jobs".into(),
            prefetch: 1,
            delivery_limit: 5,
            consumer_timeout_ms: 2 * 3600 * 1000,
            catalog_expiry_s: 7 * 24 * 3600,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Local,
    S3,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub kind: StoreKind,
    /// Folder that holds the objects (kind = "local").
    pub root: PathBuf,
    /// Bucket (kind = "s3").
    pub bucket: String,
    /// S3 endpoint URL for MinIO, Garage, R2...; empty for AWS itself.
    pub endpoint: String,
    /// The endpoint clients reach, for the URLs the job service hands out
    /// (presigned uploads and downloads); empty: `endpoint`.
    pub public_endpoint: String,
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most
    /// S3-compatible stores need.
    pub path_style: bool,
    /// Attempts per store operation before it fails (with backoff).
    pub attempts: u32,
    /// Longest wait for a store's answer to a request (upload included), in
    /// seconds: a store that never answers fails the attempt instead of
    /// holding the job.
    pub response_timeout_s: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            kind: StoreKind::Local,
            root: PathBuf::from("loopmind-store"),
            bucket: String::new(),
            endpoint: String::new(),
            public_endpoint: String::new(),
            region: "us-east-1".into(),
            path_style: false,
            attempts: 5,
            response_timeout_s: 300,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Where jobs download mixes and render before upload; empty for the
    /// system's temporary directory.
    pub scratch: PathBuf,
    /// Address `/healthz` and `/metrics` listen on: this machine only by
    /// default; a container whose probes and scraper come from outside sets
    /// `0.0.0.0` (deploy/ does).
    pub metrics_addr: String,
    /// Their port; 0 picks a free one. A port already taken (a second
    /// worker on the machine) moves to the next free one of the following
    /// 16, or, with none free, the worker runs without them; its log says
    /// which.
    pub metrics_port: u16,
    /// While the store does not answer, the worker takes no jobs and asks
    /// again after this many seconds (doubling up to 8x).
    pub store_probe_s: u64,
}

/// The port `/healthz` and `/metrics` are served on by default.
pub const METRICS_PORT: u16 = 9464;

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            scratch: PathBuf::new(),
            metrics_addr: "127.0.0.1".into(),
            metrics_port: METRICS_PORT,
            store_probe_s: 5,
        }
    }
}

/// What one render may ask for. Each render runs in a child process that
/// the worker (or `loopmind master`) watches: over its memory budget, past its
/// deadline or silent too long, it is stopped and the track fails with the
/// reason; the process that owns the queue and the batch is never touched.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RenderSettings {
    /// Address space a render child may map, in MiB (RLIMIT_AS). Today's
    /// engine holds about 2.4x the decoded track, so 2048 MiB fits about 40
    /// minutes of 48 kHz stereo; the Kubernetes worker's 900 fits about 15.
    pub memory_budget_mib: u64,
    /// Wall-clock time one render may take, in seconds.
    pub deadline_s: u64,
    /// Longest a render may go without reporting progress (a decoder stuck in
    /// a loop), in seconds.
    pub stall_s: u64,
    /// Longest track accepted, in seconds of decoded audio.
    pub max_duration_s: u64,
    /// Highest input sample rate accepted.
    pub max_sample_rate_hz: u32,
    /// Most input channels accepted (mono and stereo are mastered; more
    /// are refused with this limit named before decoding).
    pub max_channels: u32,
    /// Largest arrangement, emotion graph or settings document, in KiB.
    pub max_document_kib: u64,
    /// Disk one job may use, in MiB: the downloaded mix, the render's
    /// scratch (about 12 bytes per sample of the mix) and its masters.
    /// Checked against the track's stated length before work starts and
    /// counted as files are written; a track that needs more fails with
    /// this setting named. The Kubernetes scratch `emptyDir` is this plus
    /// [`DISK_HEADROOM_MIB`] per job a worker holds (`queue.prefetch`).
    pub disk_budget_mib: u64,
    /// Threads one render may use for its codec checks (each codec's
    /// encode on a thread of its own); 0: one per core of the machine.
    /// With several jobs in hand (`--jobs`, `queue.prefetch`) they share
    /// the cores: set it to cores / jobs to keep them from contending.
    pub threads: usize,
}

impl RenderSettings {
    /// The threads a render may use: the setting, or the machine's cores.
    pub fn render_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// What a worker's scratch volume holds beyond its jobs' disk budgets (the
/// job folders, a report, logs), in MiB.
pub const DISK_HEADROOM_MIB: u64 = 512;

impl Default for RenderSettings {
    fn default() -> Self {
        Self {
            memory_budget_mib: 2048,
            deadline_s: 3600,
            stall_s: 600,
            max_duration_s: 3 * 3600,
            max_sample_rate_hz: 192_000,
            max_channels: 2,
            max_document_kib: 1024,
            // With the headroom, the Kubernetes worker's 8 GiB emptyDir.
            disk_budget_mib: 7680,
            threads: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `loopmind_worker=debug,info`...
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Settings {
    /// Defaults, then `file` if given, then `LOOPMIND_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let defaults = config::Config::try_from(&Settings::default())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let mut b = config::Config::builder().add_source(defaults);
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::Load(format!("{}: no such file", f.display())));
            }
            b = b.add_source(config::File::from(f).format(config::FileFormat::Toml));
        }
        b = b.add_source(
            config::Environment::with_prefix("LOOPMIND")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        );
        let s: Settings = b
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Every setting in range, or the first that is not, named by its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.queue.validate()?;
        self.worker.validate()?;
        self.validate_catalog_times()?;
        self.store.validate_requests()?;
        self.render.validate()?;
        self.service.validate()?;
        self.store.validate_location()
    }

    /// How long a catalog's queues and jobs are waited for.
    fn validate_catalog_times(&self) -> Result<(), ConfigError> {
        if self.queue.catalog_expiry_s < 60 {
            return bad("queue.catalog_expiry_s", "must be at least 60 seconds");
        }
        let c = &self.coordinator;
        for (key, v) in [
            ("coordinator.job_deadline_s", c.job_deadline_s),
            ("coordinator.idle_timeout_s", c.idle_timeout_s),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1 second");
            }
        }
        Ok(())
    }

    /// The queue URL without its password, for logs.
    pub fn queue_url_redacted(&self) -> String {
        redact_url(&self.queue.url)
    }
}

/// A setting out of range, named by its key.
fn bad(key: &'static str, reason: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key,
        reason: reason.into(),
    })
}

impl QueueSettings {
    /// The broker, the jobs queue and deliveries.
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.url.starts_with("amqp://") && !self.url.starts_with("amqps://") {
            return bad("queue.url", "must start with amqp:// or amqps://");
        }
        if self.jobs.is_empty() || self.jobs.len() > 200 {
            return bad("queue.jobs", "must be a queue name of 1 to 200 characters");
        }
        if self.prefetch == 0 {
            return bad("queue.prefetch", "must be at least 1");
        }
        if self.delivery_limit == 0 {
            return bad("queue.delivery_limit", "must be at least 1");
        }
        if self.consumer_timeout_ms < 60_000 {
            return bad(
                "queue.consumer_timeout_ms",
                "must be at least 60000 (a render takes time)",
            );
        }
        Ok(())
    }
}

impl WorkerSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.metrics_addr.parse::<std::net::IpAddr>().is_err() {
            return bad(
                "worker.metrics_addr",
                "must be an IP address (0.0.0.0 for all interfaces, 127.0.0.1 for this machine only)",
            );
        }
        if self.store_probe_s == 0 {
            return bad("worker.store_probe_s", "must be at least 1 second");
        }
        Ok(())
    }
}

impl StoreSettings {
    /// How each request to the store is made: its timeout and attempts.
    fn validate_requests(&self) -> Result<(), ConfigError> {
        if self.response_timeout_s < 5 {
            return bad("store.response_timeout_s", "must be at least 5 seconds");
        }
        if self.attempts == 0 {
            return bad("store.attempts", "must be at least 1");
        }
        Ok(())
    }

    /// Where the objects are: what each kind of store needs named.
    fn validate_location(&self) -> Result<(), ConfigError> {
        match self.kind {
            StoreKind::Local if self.root.as_os_str().is_empty() => bad(
                "store.root",
                "must name a folder when store.kind = \"local\"",
            ),
            StoreKind::S3 if self.bucket.is_empty() => {
                bad("store.bucket", "must be set when store.kind = \"s3\"")
            }
            StoreKind::S3
                if !self.endpoint.is_empty()
                    && !self.endpoint.starts_with("http://")
                    && !self.endpoint.starts_with("https://") =>
            {
                bad("store.endpoint", "must be an http:// or https:// URL")
            }
            StoreKind::S3 if self.region.is_empty() => {
                bad("store.region", "must be set when store.kind = \"s3\"")
            }
            _ => Ok(()),
        }
    }
}

impl RenderSettings {
    /// One render's budgets and the largest input it accepts.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.memory_budget_mib < 64 {
            return bad(
                "render.memory_budget_mib",
                "must be at least 64 (the render process itself needs room)",
            );
        }
        if self.deadline_s == 0 || self.stall_s == 0 {
            return bad(
                if self.deadline_s == 0 {
                    "render.deadline_s"
                } else {
                    "render.stall_s"
                },
                "must be at least 1 second",
            );
        }
        if self.max_duration_s == 0 {
            return bad("render.max_duration_s", "must be at least 1 second");
        }
        if !(8000..=768_000).contains(&self.max_sample_rate_hz) {
            return bad("render.max_sample_rate_hz", "must be within 8000..768000");
        }
        if !(1..=2).contains(&self.max_channels) {
            return bad(
                "render.max_channels",
                "must be 1 or 2 (LoopMind masters mono and stereo)",
            );
        }
        if self.max_document_kib == 0 {
            return bad("render.max_document_kib", "must be at least 1");
        }
        if self.disk_budget_mib == 0 {
            return bad("render.disk_budget_mib", "must be at least 1");
        }
        if self.threads > 256 {
            return bad("render.threads", "must be 0 (one per core) to 256");
        }
        Ok(())
    }
}

/// `scheme://user:secret@host/...` -> `scheme://user:***@host/...`.
/// The host is after the *last* `@` before the query: a password written
/// with a raw `@` or `/` in it (as people do) is masked whole; a path that
/// holds an `@` is masked too (too much, never too little).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (before_query, query) = rest.split_at(end);
    match before_query.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split([':', '/']).next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{query}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_override_defaults_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("loopmind.toml");
        std::fs::write(
            &f,
            "[store]\nkind = \"s3\"\nbucket = \"masters\"\nendpoint = \"http://127.0.0.1:3900\"\npath_style = true\n",
        )
        .unwrap();
        let s = Settings::load(Some(&f)).unwrap();
        assert_eq!(s.store.kind, StoreKind::S3);
        assert_eq!(s.store.bucket, "masters");
        assert!(s.store.path_style);
        assert_eq!(s.queue.prefetch, 1);

        // The environment overrides the file (variables only this test uses).
        std::env::set_var("LOOPMIND_STORE__BUCKET", "from-env");
        std::env::set_var("LOOPMIND_WORKER__METRICS_ADDR", "127.0.0.1");
        let s = Settings::load(Some(&f));
        std::env::remove_var("LOOPMIND_STORE__BUCKET");
        std::env::remove_var("LOOPMIND_WORKER__METRICS_ADDR");
        let s = s.unwrap();
        assert_eq!(s.store.bucket, "from-env");
        assert_eq!(s.worker.metrics_addr, "127.0.0.1");
        assert_eq!(s.store.endpoint, "http://127.0.0.1:3900");

        std::fs::write(&f, "[worker]\nmetrics_addr = \"everywhere\"\n").unwrap();
        let e = Settings::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("worker.metrics_addr"), "{e}");
        std::fs::write(&f, "[queue]\nprefetch = 0\n").unwrap();
        let e = Settings::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("queue.prefetch"), "{e}");
        std::fs::write(&f, "[store]\nkind = \"s3\"\n").unwrap();
        let e = Settings::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("store.bucket"), "{e}");
        std::fs::write(&f, "[store]\nbukket = \"x\"\n").unwrap();
        let e = Settings::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("bukket"), "{e}");
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@rabbit:5672/%2f"),
            "amqp://guest:***@rabbit:5672/%2f"
        );
        assert_eq!(redact_url("amqp://rabbit/%2f"), "amqp://rabbit/%2f");
        // A password with a raw `@` (or `/`) is masked whole.
        assert_eq!(
            redact_url("amqp://guest:p@ss/w@rd@rabbit:5672/%2f"),
            "amqp://guest:***@rabbit:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://app:a@b@db:5432/loopmind?sslmode=require"),
            "postgres://app:***@db:5432/loopmind?sslmode=require"
        );
    }
}
