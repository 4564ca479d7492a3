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
//! - [`measure`]: [`bs1770`](measure::bs1770) (our loudness, the model the search runs on),
//!   [`loudness`](measure::loudness) (the ebur128 crate), [`truepeak`](measure::truepeak) (detector and 16x meter).
//! - [`analysis`]: [`sections`](analysis::sections) (features, fine edges, documents),
//!   [`structure`](analysis::structure) (merging and labels: detection), [`beats`](analysis::beats) (onsets, beat
//!   grid), [`reference`](analysis::reference) (tonal balance, character).
//! - [`process`]: [`chain`](process::chain) ([`eq`](process::eq), [`compressor`](process::compressor), [`saturation`](process::saturation),
//!   [`width`](process::width)), [`resample`](process::resample), and the master: [`master`](process::master) (gain search over
//!   the [`limiter`](process::limiter), measured on exactly the [`dither`](process::dither)ed samples written).
//!   A stage takes settings and curves; it knows nothing of plans.
//! - [`planning`]: [`modes`](planning::modes), [`plan`](planning::plan) (per-section settings, and the
//!   chain's curves from them), [`track`](planning::track) (one track's
//!   plan as a record: planned or given, then settled on the chain's
//!   output).
//! - [`pipeline`]: the passes and the [`pipeline::Source`] they read, driving
//!   all of the above; [`testsignals`]: EBU Tech 3341/3342 style signals and
//!   the demo song.
//!
//! A render session, as the worker drives it: [`pipeline::analyse`] ->
//! [`planning::track::TrackPlan`] -> [`pipeline::process`] ->
//! `TrackPlan::settle` -> [`pipeline::prepare`] per output rate ->
//! [`process::master::master_target`] per target. Stage modules are reached
//! by their paths (`loopmind_dsp::process::chain`), not flat re-exports.

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

pub use audio::Audio;
pub use error::DspError;

/// Decibels to linear amplitude.
pub fn db_to_lin(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

/// Linear amplitude to decibels (-inf for 0).
pub fn lin_to_db(lin: f64) -> f64 {
    20.0 * lin.log10()
}
