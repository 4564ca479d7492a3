//! LoopMind's DSP: sample buffers in, buffers and numbers out. No IO, no async.
//!
//! The render is a pipeline of stages ([`stage::Stage`]: a small struct with
//! state that takes a block and returns it) run as passes over a re-readable
//! source ([`pipeline`]), so memory does not grow with the track:
//!
//! ```text
//! source ─► pass 1 analyse ─► plan ─► pass 2 process ─► store ─► pass 3 prepare ─► store ─► master ─► sink
//!           features, onsets,         chain, band limit,          plan gain, resample,          gain search,
//!           true peak                 section loudness            envelope, model power         limiter, dither,
//!                                                                                               measure
//! ```
//!
//! Map of the crate, in layers (a module uses only those above it):
//! - records and primitives: [`audio`] (the planar buffer of whole-track
//!   helpers and tests), [`level`], [`stage`] (the block-stage shape),
//!   [`automation`] (values crossfaded at boundaries), [`biquad`] (the filter
//!   the meters, the analysis and the chain share), [`targets`] (what a
//!   master must land on), [`store`] (where a pass keeps what a later one
//!   reads again: files in the worker, memory in tests), [`error`], [`hash`].
//! - [`measure`]: [`bs1770`] (our loudness, the model the search runs on),
//!   [`loudness`] (the ebur128 crate), [`truepeak`] (detector and 16x meter).
//! - [`analysis`]: [`sections`] (features, fine edges, documents),
//!   [`structure`] (merging and labels: detection), [`beats`] (onsets, beat
//!   grid), [`reference`] (tonal balance, character).
//! - [`process`]: [`chain`] ([`eq`], [`compressor`], [`saturation`],
//!   [`width`]), [`resample`], and the master: [`master`] (gain search over
//!   the [`limiter`], measured on exactly the [`dither`]ed samples written).
//!   A stage takes settings and curves; it knows nothing of plans.
//! - [`planning`]: [`modes`], [`plan`] (per-section settings, and the
//!   chain's curves from them).
//! - [`pipeline`]: the passes and the [`pipeline::Source`] they read, driving
//!   all of the above; [`testsignals`]: EBU Tech 3341/3342 style signals and
//!   the demo song.
//!
//! The modules keep their short paths (`loopmind_dsp::chain`, ...) as
//! re-exports, so the folders show the pipeline without renaming callers.

pub mod analysis;
pub mod audio;
pub mod automation;
pub mod biquad;
pub mod error;
pub mod hash;
pub mod level;
pub mod measure;
pub mod pipeline;
pub mod planning;
pub mod process;
pub mod stage;
pub mod store;
pub mod targets;
pub mod testsignals;

pub(crate) use analysis::stft;
pub use analysis::{beats, reference, sections, structure, texture};
pub use audio::Audio;
pub use error::DspError;
pub(crate) use measure::fir;
pub use measure::{bs1770, loudness, truepeak};
pub use planning::{modes, plan};
pub use process::{chain, compressor, dither, eq, limiter, master, resample, saturation, width};

/// Decibels to linear amplitude.
pub fn db_to_lin(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

/// Linear amplitude to decibels (-inf for 0).
pub fn lin_to_db(lin: f64) -> f64 {
    20.0 * lin.log10()
}
