//! The render's scratch stores as files: each lane of frames one file of
//! little-endian f32, appended in large writes and read back with positioned
//! reads through a small window per lane. The page cache may hold them, but
//! none of it is the process's memory: a 2-hour track costs disk (about
//! 24 bytes per stereo frame at the peak), not RAM. Files go when the store
//! is dropped.

use loopmind_dsp::error::IoFault;
use loopmind_dsp::store::{FrameStore, Scratch};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Frames a lane reads ahead (256 KiB).
const WINDOW: usize = 65_536;
/// Bytes a lane collects before writing.
const WRITE_BUF: usize = 1 << 20;

/// Makes [`FileStore`]s in a folder.
pub(crate) struct FileScratch {
    dir: PathBuf,
}

impl FileScratch {
    pub(crate) fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }
}

impl Scratch for FileScratch {
    fn create(&mut self, lanes: usize, what: &str) -> Result<Box<dyn FrameStore>, IoFault> {
        let mut files = Vec::with_capacity(lanes);
        for lane in 0..lanes {
            let path = self.dir.join(format!("{what}.{lane}.f32"));
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| IoFault::io(path.display(), e))?;
            files.push(Lane {
                path,
                file,
                written: 0,
                pending: Vec::new(),
                start: 0,
                window: Vec::new(),
                bytes: Vec::new(),
            });
        }
        Ok(Box::new(FileStore {
            lanes: files,
            frames: 0,
        }))
    }
}

struct Lane {
    path: PathBuf,
    file: File,
    /// Bytes on disk, counted against the job's disk budget.
    written: u64,
    /// Bytes appended but not yet written.
    pending: Vec<u8>,
    /// The window: frames from `start`.
    start: usize,
    window: Vec<f32>,
    bytes: Vec<u8>,
}

impl Lane {
    fn err(&self, e: std::io::Error) -> IoFault {
        IoFault::io(self.path.display(), e)
    }

    fn flush(&mut self) -> Result<(), IoFault> {
        if !self.pending.is_empty() {
            crate::disk::charge(self.pending.len() as u64).map_err(|e| self.err(e))?;
            self.written += self.pending.len() as u64;
            let r = self.file.write_all(&self.pending);
            r.map_err(|e| self.err(e))?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Reads frames `from..from + out.len()` (all inside the file).
    fn read_at(&mut self, from: usize, n: usize, out: &mut [f32]) -> Result<(), IoFault> {
        self.bytes.resize(n * 4, 0);
        let r = self.file.read_exact_at(&mut self.bytes, from as u64 * 4);
        r.map_err(|e| self.err(e))?;
        for (o, b) in out.iter_mut().zip(self.bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }
}

/// See the module's notes.
pub(crate) struct FileStore {
    lanes: Vec<Lane>,
    frames: usize,
}

impl FrameStore for FileStore {
    fn append(&mut self, lanes: &[&[f32]]) -> Result<(), IoFault> {
        for (lane, data) in self.lanes.iter_mut().zip(lanes) {
            lane.pending
                .extend(data.iter().flat_map(|v| v.to_le_bytes()));
            if lane.pending.len() >= WRITE_BUF {
                lane.flush()?;
            }
        }
        self.frames += lanes.first().map_or(0, |l| l.len());
        Ok(())
    }

    fn read(&mut self, lane: usize, from: usize, out: &mut [f32]) -> Result<(), IoFault> {
        let frames = self.frames;
        let l = &mut self.lanes[lane];
        l.flush()?;
        let have = frames.saturating_sub(from).min(out.len());
        out[have..].fill(0.0);
        if have == 0 {
            return Ok(());
        }
        if have > WINDOW {
            return l.read_at(from, have, &mut out[..have]);
        }
        if from < l.start || from + have > l.start + l.window.len() {
            let n = WINDOW.min(frames - from);
            let mut w = std::mem::take(&mut l.window);
            w.resize(n, 0.0);
            l.read_at(from, n, &mut w)?;
            l.window = w;
            l.start = from;
        }
        let at = from - l.start;
        out[..have].copy_from_slice(&l.window[at..at + have]);
        Ok(())
    }

    fn frames(&self) -> usize {
        self.frames
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        for l in &self.lanes {
            let _ = std::fs::remove_file(&l.path);
            crate::disk::refund(l.written);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_appended_from_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let mut scratch = FileScratch::new(dir.path()).unwrap();
        let mut store = scratch.create(2, "t").unwrap();
        let n = 3 * WINDOW + 123;
        let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..n).map(|i| -(i as f32)).collect();
        for k in (0..n).step_by(1000) {
            let e = (k + 1000).min(n);
            store.append(&[&a[k..e], &b[k..e]]).unwrap();
        }
        assert_eq!(store.frames(), n);
        for (from, len) in [
            (0, 10),
            (WINDOW - 5, 10),
            (5, WINDOW + 7),
            (n - 3, 10),
            (n + 4, 3),
            (17, 4),
        ] {
            let mut out = vec![1f32; len];
            store.read(1, from, &mut out).unwrap();
            for (i, v) in out.iter().enumerate() {
                let want = if from + i < n {
                    -((from + i) as f32)
                } else {
                    0.0
                };
                assert_eq!(*v, want, "frame {}", from + i);
            }
        }
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 2);
        drop(store);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "files removed"
        );
    }
}
