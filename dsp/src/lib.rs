//! LoopMind's DSP: sample buffers in, buffers and numbers out. No IO, no async.
//!
//! Map of the crate:
//! - [`audio`]: the planar `Audio` buffer every stage works on.
//! - [`loudness`]: BS.1770 / EBU R128 measurement (ebur128 crate, queue mode).
//! - [`bs1770`]: a fast BS.1770 loudness model the gain search runs on.
//! - [`truepeak`]: polyphase interpolation; the limiter's detector and a
//!   near-ideal 16x true-peak meter ([`fir`] is their vectorised kernel).
//! - [`biquad`], [`eq`], [`compressor`], [`saturation`], [`width`]: the chain's stages.
//! - [`chain`]: runs the stages in order on a buffer, in place.
//! - [`limiter`]: lookahead true-peak limiter with a provable bound.
//! - [`dither`]: TPDF dither and quantisation to the target bit depth.
//! - [`resample`]: sample-rate conversion (rubato).
//! - [`targets`]: platform presets (Spotify, Apple Music, EBU R128, ...).
//! - [`modes`]: mastering modes and the chain settings they plan.
//! - [`master`]: gain search that lands a master on its target, measured on
//!   exactly the samples that get written.
//! - [`plan`]: per-section loudness, EQ, compression, saturation and width.
//! - [`beats`]: tempo and beat grid (boundaries snap to beats).
//! - [`automation`]: per-section values crossfaded at the boundaries.
//! - [`reference`]: tonal balance and loudness character of a reference track.
//! - [`sections`]: arrangement and emotion documents, and section detection.
//! - [`stft`]: windowed spectra of the mid signal (beats, reference).
//! - [`testsignals`]: EBU Tech 3341/3342 style signals and test songs.

pub mod audio;
pub mod automation;
pub mod beats;
pub mod biquad;
pub mod bs1770;
pub mod chain;
pub mod compressor;
pub mod dither;
pub mod eq;
pub mod error;
pub mod fir;
pub mod level;
pub mod limiter;
pub mod loudness;
pub mod master;
pub mod modes;
pub mod pipeline;
pub mod plan;
pub mod reference;
pub mod resample;
pub mod saturation;
pub mod sections;
pub mod stage;
pub mod stft;
pub mod store;
pub mod targets;
pub mod testsignals;
pub mod truepeak;
pub mod width;

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
