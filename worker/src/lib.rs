//! LoopMind's worker: everything around one render function.
//!
//! Map of the crate:
//! - [`decode`]: any supported file (probed by content) to planar f32 and tags.
//! - [`wav`]: the master writer: a `.partial` file renamed when complete,
//!   with the source's tags in a LIST/INFO chunk.
//! - [`render`]: one track to every target in a scratch folder: analyse,
//!   process, limit, write masters and `master_settings.json`.
//! - [`process`]: one job end to end against an object store: fetch, render,
//!   publish, `report.json` last (or `error.json`). Local mode and queue
//!   workers both run it.
//! - [`isolate`]: every render in a child process of its own, under a
//!   memory budget and a deadline; [`progress`]: the stages it reports.
//! - [`layout`]: every output key and path, from validated parts.
//! - [`request`]: the render request, every option that changes a master,
//!   declared and checked once.
//! - [`job`]: the job and result messages, safe ids.
//! - [`store`]: the object store trait and the folder store; [`s3`]: S3 and
//!   S3-compatible stores.
//! - [`rabbitmq`]: queue topology, connections with backoff, confirms.
//! - [`queue`]: the queue seen from both ends (a runner's [`queue::JobQueue`],
//!   a worker's [`queue::Delivery`]), the one job step every queue runs,
//!   the in-process queue of local mode and the store circuit breaker.
//! - [`consumer`]: `loopmind worker`'s RabbitMQ consume loop.
//! - [`metrics`], [`http`]: what a worker has done, served as `/metrics`,
//!   and `/healthz`.
//! - [`config`]: settings from defaults, a TOML file and the environment.
//! - [`shutdown`]: SIGTERM / Ctrl-C, listened to by every task.
//! - [`plot`]: `loudness.png`, input and master loudness over the sections.
//! - [`preview`]: loudness-matched A/B clips of the mix and each master.
//! - [`report`]: the shapes of `report.json`, `error.json` and
//!   `master_settings.json`.
//! - [`schema`]: the `schema_version` every document and message carries.
//! - [`error`]: what went wrong and whether retrying could help.

pub mod codec;
pub mod config;
pub mod consumer;
pub mod decode;
pub mod error;
pub mod http;
pub mod isolate;
pub mod job;
pub mod layout;
pub mod metrics;
pub mod plot;
pub mod preview;
pub mod process;
pub mod progress;
pub mod queue;
pub mod rabbitmq;
pub mod render;
pub mod report;
pub mod request;
pub mod s3;
pub mod schema;
pub mod shutdown;
pub mod spill;
pub mod store;
pub mod target;
pub mod wav;

pub use error::{Action, WorkerError};
pub use render::{render_masters, RenderInputs};
pub use request::RenderRequest;
