//! The stages that change the audio: the chain (EQ, compressor, saturation,
//! width), resampling, and the master's gain search, limiter and dither.

pub mod chain;
pub mod compressor;
pub mod dither;
pub mod eq;
pub mod limiter;
pub mod master;
pub mod resample;
pub mod saturation;
pub mod width;
