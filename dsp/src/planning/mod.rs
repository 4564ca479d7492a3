//! From analysis to settings: platform targets, modes, per-section plans and
//! their automation.

pub mod automation;
pub mod modes;
pub mod plan;
pub mod targets;
