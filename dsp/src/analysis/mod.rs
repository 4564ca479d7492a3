//! Pass 1's measurements and what is decided from them: section features,
//! onsets and the beat grid, the tonal balance a reference is matched by.

pub mod beats;
pub mod reference;
pub mod sections;
pub(crate) mod stft;
pub mod structure;
pub mod texture;
