//! Writing masters: PCM WAV (header by hound, samples packed here: hound's
//! per-sample writer cost more than the dither), to `<name>.partial` first and
//! renamed to `<name>` only when complete, so no reader ever mistakes a half
//! written file for a master. The source's tags go into a LIST/INFO chunk.

use crate::decode::Tags;
use crate::WorkerError;
use loopmind_dsp::error::IoFault;
use loopmind_dsp::process::master::MasterSink;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub(crate) struct WavSink {
    final_path: PathBuf,
    partial: PathBuf,
    spec: hound::WavSpec,
    writer: Option<BufWriter<File>>,
    /// The RIFF/fmt/data headers; the data size is the last 4 bytes.
    header: Vec<u8>,
    data_bytes: u64,
    packed: Vec<u8>,
    /// Bytes of the partial file counted against the job's disk budget.
    charged: u64,
}

/// Refuses, before any rendering, a master a WAV file cannot hold (its
/// sizes are 32-bit: 4 GiB in all).
pub(crate) fn check_size(
    target: &str,
    seconds: f64,
    channels: usize,
    rate: u32,
    bits: u16,
) -> Result<(), WorkerError> {
    let bytes = seconds * rate as f64 * channels as f64 * (bits / 8) as f64;
    // Headers and the INFO chunk take the rest.
    let room = (u32::MAX - 64 * 1024) as f64;
    if bytes > room {
        return Err(WorkerError::Limit {
            what: format!(
                "the {target} master ({:.1} GiB)",
                bytes / (1u64 << 30) as f64
            ),
            limit: "4 GiB".into(),
            setting: "the WAV format: lower the target's rate or bit depth, or split the track",
        });
    }
    Ok(())
}

/// The temporary name a file is written under.
pub(crate) fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// hound's headers for `spec` with no samples yet (sizes patched at commit).
fn empty_header(spec: hound::WavSpec) -> Result<Vec<u8>, hound::Error> {
    let mut buf = Cursor::new(Vec::new());
    hound::WavWriter::new(&mut buf, spec).and_then(|w| w.finalize())?;
    Ok(buf.into_inner())
}

impl WavSink {
    pub(crate) fn new(path: &Path, channels: usize, rate: u32, bits: u16) -> Self {
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
            header: Vec::new(),
            data_bytes: 0,
            packed: Vec::new(),
            charged: 0,
        }
    }

    /// Finalises the file, adds the INFO chunk and renames it into place.
    pub(crate) fn commit(mut self, tags: &Tags) -> Result<(), WorkerError> {
        let enc = |reason: String| WorkerError::Encode {
            path: self.final_path.clone(),
            reason,
        };
        let writer = self
            .writer
            .take()
            .ok_or_else(|| enc("nothing was written".into()))?;
        let data = u32::try_from(self.data_bytes)
            .ok()
            .filter(|d| (*d as u64) + self.header.len() as u64 + 1024 < u32::MAX as u64)
            .ok_or_else(|| enc("longer than a WAV file can hold (4 GiB)".into()))?;
        let mut f = writer.into_inner().map_err(|e| enc(e.to_string()))?;
        let io = |e| WorkerError::io(&self.partial, e);
        let data_at = self.header.len() as u64 - 4;
        f.seek(SeekFrom::Start(data_at)).map_err(io)?;
        f.write_all(&data.to_le_bytes()).map_err(io)?;
        let riff = (self.header.len() as u64 - 8 + self.data_bytes) as u32;
        f.seek(SeekFrom::Start(4)).map_err(io)?;
        f.write_all(&riff.to_le_bytes()).map_err(io)?;
        drop(f);
        append_info(&self.partial, tags).map_err(io)?;
        fs::rename(&self.partial, &self.final_path)
            .map_err(|e| WorkerError::io(&self.final_path, e))?;
        // The master stays on disk: its bytes stay counted.
        self.charged = 0;
        Ok(())
    }

    /// Counts `bytes` about to be written against the job's disk budget.
    fn charge(&mut self, bytes: u64) -> Result<(), IoFault> {
        crate::disk::charge(bytes).map_err(|e| IoFault::io(self.partial.display(), e))?;
        self.charged += bytes;
        Ok(())
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        // Never leave a partial file behind; a committed one was renamed away.
        self.writer.take();
        let _ = fs::remove_file(&self.partial);
        crate::disk::refund(self.charged);
    }
}

impl MasterSink for WavSink {
    fn restart(&mut self) -> Result<(), IoFault> {
        self.writer.take();
        // The file starts again from nothing.
        crate::disk::refund(std::mem::take(&mut self.charged));
        if self.header.is_empty() {
            // (In memory: only a spec hound refuses fails here.)
            self.header =
                empty_header(self.spec).map_err(|e| IoFault::other("the WAV header", e))?;
        }
        self.charge(self.header.len() as u64)?;
        let io = |e| IoFault::io(self.partial.display(), e);
        let f = File::create(&self.partial).map_err(io)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&self.header).map_err(io)?;
        self.writer = Some(w);
        self.data_bytes = 0;
        Ok(())
    }

    fn write(&mut self, chunk: &[&[f32]]) -> Result<(), IoFault> {
        let bits = self.spec.bits_per_sample;
        let scale = (1u32 << (bits - 1)) as f32;
        let width = bits as usize / 8;
        let frames = chunk.first().map_or(0, |c| c.len());
        self.packed.clear();
        self.packed.reserve(frames * chunk.len() * width);
        for i in 0..frames {
            for c in chunk {
                // Samples arrive on the PCM grid already: this is exact.
                let v = (c[i] * scale) as i32;
                self.packed.extend_from_slice(&v.to_le_bytes()[..width]);
            }
        }
        self.data_bytes += self.packed.len() as u64;
        let n = self.packed.len() as u64;
        self.charge(n)?;
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| IoFault::other(self.partial.display(), "writer not started"))?;
        w.write_all(&self.packed)
            .map_err(|e| IoFault::io(self.partial.display(), e))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_over_4_gib_is_refused_before_rendering() {
        // 3 h at 96 kHz, 24-bit stereo: 6.2 GB.
        let e = check_size("film", 3.0 * 3600.0, 2, 96_000, 24).unwrap_err();
        assert!(
            e.to_string()
                .contains("the film master (5.8 GiB) is over the limit of 4 GiB"),
            "{e}"
        );
        assert_eq!(e.action(), crate::Action::Abort);
        // 3 h at 44.1 kHz, 16-bit stereo: 1.9 GB.
        assert!(check_size("cd", 3.0 * 3600.0, 2, 44_100, 16).is_ok());
    }

    #[test]
    fn written_samples_read_back_exactly_with_tags_after_data() {
        let dir = tempfile::tempdir().unwrap();
        for bits in [16u16, 24] {
            let path = dir.path().join(format!("m{bits}.wav"));
            let scale = (1u32 << (bits - 1)) as f32;
            // Mono with an odd frame count: the data chunk needs a pad byte.
            let x: Vec<f32> = (0..1001)
                .map(|i| ((i * 7919) % 2001) as f32 - 1000.0)
                .map(|v| (v * 31.0).clamp(-scale, scale - 1.0) / scale)
                .collect();
            let mut sink = WavSink::new(&path, 1, 44_100, bits);
            sink.restart().unwrap();
            sink.write(&[&x[..500]]).unwrap();
            sink.write(&[&x[500..]]).unwrap();
            let tags = Tags {
                title: Some("T".into()),
                ..Default::default()
            };
            sink.commit(&tags).unwrap();
            assert!(!partial_path(&path).exists());
            let mut r = hound::WavReader::open(&path).unwrap();
            assert_eq!(r.spec().bits_per_sample, bits);
            assert_eq!(r.duration(), 1001);
            let back: Vec<f32> = r
                .samples::<i32>()
                .map(|s| s.unwrap() as f32 / scale)
                .collect();
            assert_eq!(back, x);
            let bytes = fs::read(&path).unwrap();
            let riff = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
            assert_eq!(riff as usize, bytes.len() - 8);
            assert!(bytes.windows(4).any(|w| w == b"INAM"));
        }
    }
}
