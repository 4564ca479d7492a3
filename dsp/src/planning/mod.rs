//! From analysis to settings: platform targets, modes, per-section plans and
//! their automation; [`track`]: one track's plan as a record.

pub mod modes;
pub mod plan;
pub mod track;
