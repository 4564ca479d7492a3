//! Writing masters: PCM WAV through hound, to `<name>.partial` first and
//! renamed to `<name>` only when complete, so no reader ever mistakes a half
//! written file for a master. The source's tags go into a LIST/INFO chunk.

use crate::decode::Tags;
use crate::WorkerError;
use loopmind_dsp::master::MasterSink;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub struct WavSink {
    final_path: PathBuf,
    partial: PathBuf,
    spec: hound::WavSpec,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    interleaved: Vec<i32>,
}

/// The temporary name a file is written under.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

impl WavSink {
    pub fn new(path: &Path, channels: usize, rate: u32, bits: u16) -> Self {
        Self {
            final_path: path.to_path_buf(),
            partial: partial_path(path),
            spec: hound::WavSpec {
                channels: channels as u16,
                sample_rate: rate,
                bits_per_sample: bits,
                sample_format: hound::SampleFormat::Int,
            },
            writer: None,
            interleaved: Vec::new(),
        }
    }

    /// Finalises the file, adds the INFO chunk and renames it into place.
    pub fn commit(mut self, tags: &Tags) -> Result<(), WorkerError> {
        let enc = |reason: String| WorkerError::Encode {
            path: self.final_path.clone(),
            reason,
        };
        let writer = self
            .writer
            .take()
            .ok_or_else(|| enc("nothing was written".into()))?;
        writer.finalize().map_err(|e| enc(e.to_string()))?;
        append_info(&self.partial, tags).map_err(|e| WorkerError::io(&self.partial, e))?;
        fs::rename(&self.partial, &self.final_path)
            .map_err(|e| WorkerError::io(&self.final_path, e))?;
        Ok(())
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        // Never leave a partial file behind; a committed one was renamed away.
        self.writer.take();
        let _ = fs::remove_file(&self.partial);
    }
}

impl MasterSink for WavSink {
    fn restart(&mut self) -> Result<(), String> {
        self.writer.take();
        let f =
            File::create(&self.partial).map_err(|e| format!("{}: {e}", self.partial.display()))?;
        let w = hound::WavWriter::new(BufWriter::with_capacity(1 << 20, f), self.spec)
            .map_err(|e| e.to_string())?;
        self.writer = Some(w);
        Ok(())
    }

    fn write(&mut self, chunk: &[&[f32]]) -> Result<(), String> {
        let w = self.writer.as_mut().ok_or("writer not started")?;
        let scale = (1u32 << (self.spec.bits_per_sample - 1)) as f32;
        let frames = chunk.first().map_or(0, |c| c.len());
        self.interleaved.clear();
        for i in 0..frames {
            for c in chunk {
                // Samples arrive on the PCM grid already: this is exact.
                self.interleaved.push((c[i] * scale) as i32);
            }
        }
        if self.spec.bits_per_sample == 16 {
            let mut sw = w.get_i16_writer(self.interleaved.len() as u32);
            for &s in &self.interleaved {
                sw.write_sample(s as i16);
            }
            sw.flush().map_err(|e| e.to_string())
        } else {
            for &s in &self.interleaved {
                w.write_sample(s).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    }
}

/// Appends a LIST/INFO chunk (INAM title, IART artist, IPRD album, ISRC, ISFT
/// software) and fixes the RIFF size.
fn append_info(path: &Path, tags: &Tags) -> std::io::Result<()> {
    let mut body = b"INFO".to_vec();
    let software = format!("LoopMind {}", env!("CARGO_PKG_VERSION"));
    let fields = [
        (b"INAM", tags.title.as_deref()),
        (b"IART", tags.artist.as_deref()),
        (b"IPRD", tags.album.as_deref()),
        (b"ISRC", tags.isrc.as_deref()),
        (b"ISFT", Some(software.as_str())),
    ];
    for (id, value) in fields {
        let Some(v) = value else { continue };
        let mut data = v.as_bytes().to_vec();
        data.push(0);
        body.extend_from_slice(id);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let mut end = f.seek(SeekFrom::End(0))?;
    if end % 2 == 1 {
        // RIFF chunks start on even offsets.
        f.write_all(&[0])?;
        end += 1;
    }
    f.write_all(b"LIST")?;
    f.write_all(&(body.len() as u32).to_le_bytes())?;
    f.write_all(&body)?;
    let riff_size = (end + 8 + body.len() as u64 - 8) as u32;
    f.seek(SeekFrom::Start(4))?;
    f.write_all(&riff_size.to_le_bytes())?;
    f.sync_all()
}
