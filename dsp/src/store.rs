//! Where the pipeline keeps what a later pass reads again, instead of the
//! track in memory: frames appended once, in order, then read back in blocks
//! from any position. The worker's stores are files in its scratch folder
//! (read with positioned reads, so nothing of them counts as the process's
//! memory); tests and the examples use [`MemoryScratch`].

use crate::error::IoFault;

/// Frames of several lanes (audio channels, the detector envelope, the
/// K-weighted power), each lane one `f32` per frame.
pub trait FrameStore: Send {
    /// Appends frames: one slice per lane, all of one length.
    fn append(&mut self, lanes: &[&[f32]]) -> Result<(), IoFault>;
    /// Reads lane `lane` from frame `from` into `out`; zeros past the end.
    fn read(&mut self, lane: usize, from: usize, out: &mut [f32]) -> Result<(), IoFault>;
    /// Frames appended so far.
    fn frames(&self) -> usize;
}

/// Makes stores: one per pass output (`what` names it in errors and files).
pub trait Scratch {
    fn create(&mut self, lanes: usize, what: &str) -> Result<Box<dyn FrameStore>, IoFault>;
}

/// Lanes in memory.
pub struct MemoryStore {
    lanes: Vec<Vec<f32>>,
}

impl MemoryStore {
    pub fn new(lanes: usize) -> Self {
        Self {
            lanes: vec![Vec::new(); lanes],
        }
    }
}

impl FrameStore for MemoryStore {
    fn append(&mut self, lanes: &[&[f32]]) -> Result<(), IoFault> {
        for (d, s) in self.lanes.iter_mut().zip(lanes) {
            d.extend_from_slice(s);
        }
        Ok(())
    }

    fn read(&mut self, lane: usize, from: usize, out: &mut [f32]) -> Result<(), IoFault> {
        let src = &self.lanes[lane];
        let have = src.len().saturating_sub(from).min(out.len());
        if have > 0 {
            out[..have].copy_from_slice(&src[from..from + have]);
        }
        out[have..].fill(0.0);
        Ok(())
    }

    fn frames(&self) -> usize {
        self.lanes.first().map_or(0, Vec::len)
    }
}

/// Makes [`MemoryStore`]s.
pub struct MemoryScratch;

impl Scratch for MemoryScratch {
    fn create(&mut self, lanes: usize, _: &str) -> Result<Box<dyn FrameStore>, IoFault> {
        Ok(Box::new(MemoryStore::new(lanes)))
    }
}
