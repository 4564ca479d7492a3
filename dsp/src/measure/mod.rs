//! Meters: BS.1770 / EBU R128 loudness (ours and the ebur128 crate's), true
//! peak (the limiter's detector and a 16x meter) and their FIR kernel.

pub mod bs1770;
pub(crate) mod fir;
pub mod loudness;
pub mod truepeak;
