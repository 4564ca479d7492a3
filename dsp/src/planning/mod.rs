//! From analysis to settings: platform targets, modes, per-section plans and
//! their automation.

pub mod modes;
pub mod plan;
