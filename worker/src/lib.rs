//! LoopMind's worker: everything around one render function.
//!
//! Map of the crate:
//! - [`decode`]: any supported file (probed by content) to planar f32 and tags.
//! - [`wav`]: the master writer: a `.partial` file renamed when complete,
//!   with the source's tags in a LIST/INFO chunk.
//! - [`render`]: one track to every target: analyse, process, limit, write,
//!   report. The function local mode and queue workers both call.
//! - [`report`]: the shapes of `report.json`, `error.json` and
//!   `master_settings.json`.
//! - [`error`]: what went wrong and whether retrying could help.

pub mod decode;
pub mod error;
pub mod render;
pub mod report;
pub mod wav;

pub use error::{Action, WorkerError};
pub use render::{render_track, RenderOptions};
