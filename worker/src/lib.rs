//! LoopMind's worker: everything around one render function.
//!
//! Map of the crate, in layers: a module uses only those of its own layer
//! above it and those of earlier layers (no import cycles; `shape` checks).
//!
//! Records and settings, shared by every layer:
//! - [`config`]: settings from defaults, a TOML file and the environment.
//! - [`error`]: what went wrong and whether retrying could help.
//! - [`schema`]: the `schema_version` every document and message carries.
//! - [`progress`]: the stages a render reports as it goes.
//! - [`request`]: the render request, every option that changes a master,
//!   declared and checked once, and the inputs it names as read.
//! - [`layout`]: every output key, path and file name, from validated parts.
//!
//! One track, no network and no queue:
//! - [`decode`]: any supported file (probed by content) to planar f32 and tags;
//!   [`opus_input`]: libopus as a symphonia decoder, for Ogg Opus inputs.
//! - [`disk`]: the job's disk budget, checked and counted.
//! - [`wav`]: the master writer: a `.partial` file renamed when complete,
//!   with the source's tags in a LIST/INFO chunk; [`spill`]: scratch stores.
//! - [`codec`]: the platforms' encoders and decoders, the codec check.
//! - [`target`]: one target's master, its check and its deliverables.
//! - [`render`]: one track to every target in a scratch folder: analyse,
//!   process, limit, write masters and `master_settings.json`.
//! - [`report`]: the shapes of `report.json`, `error.json` and
//!   `master_settings.json`; [`plot`]: `loudness.png`; [`preview`]:
//!   loudness-matched A/B clips of the mix and each master.
//! - [`job`]: the job and result messages, safe ids.
//! - [`isolate`]: every render in a child process of its own, under a
//!   memory budget and a deadline.
//!
//! Backends, one trait each:
//! - [`store`]: the object store trait, the folder store and [`s3`] (S3 and
//!   S3-compatible stores).
//! - [`rabbitmq`]: queue topology, connections with backoff, confirms.
//!
//! The service:
//! - [`fence`]: run fencing, the one rule for who may write a track's
//!   outputs (a newer run's, or a later try's, never replaced).
//! - [`process`]: one job end to end against an object store: fetch, render,
//!   publish, `report.json` last (or `error.json`). Local mode and queue
//!   workers both run it.
//! - [`queue`]: the queue seen from both ends (a runner's [`queue::JobQueue`],
//!   a worker's [`queue::Delivery`]), the one job step every queue runs,
//!   the in-process queue of local mode and the store circuit breaker.
//! - [`consumer`]: `loopmind worker`'s RabbitMQ consume loop.
//! - [`metrics`], [`http`]: what a worker has done, served as `/metrics`,
//!   and `/healthz`.
//! - [`shutdown`]: SIGTERM / Ctrl-C, listened to by every task.

#![warn(unreachable_pub)]

pub mod codec;
pub mod config;
pub mod consumer;
pub mod decode;
pub mod disk;
pub mod error;
pub mod fence;
pub mod http;
pub mod isolate;
pub mod job;
pub mod layout;
pub mod metrics;
pub mod opus_input;
pub(crate) mod plot;
pub(crate) mod preview;
pub mod process;
pub mod progress;
pub mod queue;
pub mod rabbitmq;
pub mod render;
pub mod report;
pub mod request;
pub mod schema;
pub mod shutdown;
pub(crate) mod spill;
pub mod store;
pub(crate) mod target;
pub(crate) mod wav;

// The S3 backend keeps its short path.
pub use store::s3;

pub use error::{Action, WorkerError};
pub use render::{render_masters, RenderInputs};
pub use request::RenderRequest;
