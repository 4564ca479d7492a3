//! The shape every processing step of the render shares: a small struct with
//! state that takes a block of audio and returns it processed, so a track of
//! any length streams through in blocks and never needs to be held whole.

/// A processing step. Blocks are planar (one `Vec` per channel, all of one
/// length); every block but the last is a whole number of control blocks
/// ([`crate::automation::BLOCK`] frames), so a stage's output does not
/// depend on how the track was cut into blocks.
pub trait Stage: Send {
    fn process(&mut self, block: &mut [Vec<f32>]);
}

/// Frames in a planar block.
pub fn frames(block: &[Vec<f32>]) -> usize {
    block.first().map_or(0, Vec::len)
}

/// Runs `stage` over a whole buffer as one block.
pub fn run_whole(stage: &mut dyn Stage, audio: &mut crate::Audio) {
    stage.process(&mut audio.channels);
}
