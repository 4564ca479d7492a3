//! Where mixes come from and masters go: an object store. Two kinds behind one
//! trait: a folder (local mode, tests) and S3 or any S3-compatible service
//! ([`s3`]). Writes are whole-or-nothing for readers.

pub mod files;
pub mod s3;

use crate::config::{StoreKind, StoreSettings};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}: no such object")]
    NotFound(String),
    /// Worth retrying later: timeouts, throttling, a store that is down.
    #[error("{what}: {reason}")]
    Transient { what: String, reason: String },
    /// Retrying will not help (refused, malformed).
    #[error("{what}: {reason}")]
    Permanent { what: String, reason: String },
    /// Larger than the reader asked for at most: never read past the limit.
    #[error("{what}: larger than {limit} bytes")]
    TooLarge { what: String, limit: u64 },
}

/// What identifies an object's content: its ETag (S3) or, for a file, a
/// stat key a restore cannot fake ([`stat_tag`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub etag: String,
    pub size: u64,
}

#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Downloads `key` into the file `dest`; an object larger than
    /// `max_bytes` is [`StoreError::TooLarge`], never downloaded past it.
    async fn get_file(
        &self,
        key: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<ObjectMeta, StoreError>;
    /// An object's bytes, or None if there is no such object; one larger
    /// than `max_bytes` is [`StoreError::TooLarge`], never held in memory
    /// (documents, manifests and reports are read whole).
    async fn get_bytes(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, StoreError>;
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError>;
    /// Uploads a file; readers see the whole object or none.
    async fn put_file(&self, key: &str, src: &Path) -> Result<(), StoreError>;
    async fn put_bytes(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError>;
    /// The keys of the objects directly under `prefix` (which ends in
    /// `/`), at most `max` (more is a permanent error). A key written
    /// before the call is listed: S3 (since December 2020), MinIO, R2 and
    /// Garage list consistently after writes.
    async fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError>;
    /// Removes an object; absent is fine.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// A human-readable address for messages (`s3://bucket/key`, a path).
    fn describe(&self, key: &str) -> String;
    /// A URL that lets whoever holds it GET or PUT `key` for `ttl`, made
    /// for the store's public address; None when the store hands out none
    /// (a folder: the job service signs URLs of its own).
    async fn presign(
        &self,
        _method: Presign,
        _key: &str,
        _ttl: std::time::Duration,
    ) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
}

/// What a presigned URL allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presign {
    Get,
    Put,
}

/// Opens the store the settings describe.
pub async fn open(settings: &StoreSettings) -> Result<Arc<dyn ObjectStore>, StoreError> {
    Ok(match settings.kind {
        StoreKind::Local => Arc::new(FolderStore::new(&settings.root)),
        StoreKind::S3 => Arc::new(s3::S3Store::new(settings).await?),
    })
}

/// Objects as files under a root folder. A key that is an absolute path names
/// a file outside the root: local mode reads mixes where they already are.
pub struct FolderStore {
    root: PathBuf,
}

impl FolderStore {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Where a write to `key` goes: only ever under the root.
    fn write_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        if !crate::layout::relative_key(key) {
            return Err(StoreError::Permanent {
                what: key.to_string(),
                reason: "refused: not a key inside the store's folder".into(),
            });
        }
        Ok(self.root.join(key))
    }
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    let what = path.display().to_string();
    if e.kind() == std::io::ErrorKind::NotFound {
        return StoreError::NotFound(what);
    }
    StoreError::Transient {
        what,
        reason: e.to_string(),
    }
}

/// A file that is there but is no input (a FIFO, a device): never worth
/// a retry.
fn refused(path: &Path, e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::InvalidInput {
        return StoreError::Permanent {
            what: path.display().to_string(),
            reason: e.to_string(),
        };
    }
    io_err(path, e)
}

/// A file's content tag without reading it: size, modification and change
/// times (ns) and inode. The change time is the one a copy or restore
/// cannot set (`cp -p`, `rsync -t` and `touch -r` set the modification
/// time only), so a file replaced by another of the same size and time is
/// still told apart; a chmod renders again, which is only cautious.
pub fn stat_tag(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{}-{}.{:09}-{}.{:09}-{}",
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino()
    )
}

fn file_meta(path: &Path) -> Result<ObjectMeta, StoreError> {
    let m = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    if let Some(kind) = files::special_kind(&m.file_type()) {
        return Err(StoreError::Permanent {
            what: path.display().to_string(),
            reason: format!("{kind}, not a regular file"),
        });
    }
    if !m.is_file() {
        return Err(StoreError::NotFound(path.display().to_string()));
    }
    Ok(ObjectMeta {
        etag: stat_tag(&m),
        size: m.len(),
    })
}

/// An id no other process makes: the time and the process id.
pub fn unique_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", std::process::id())
}

/// Writes through a temporary name in the same folder, then renames.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    // A name of this write's own, created new: two writers of one key (two
    // tries of a job) never write into the same file, and a link planted
    // under a guessable name is never followed.
    let mut name = path.as_os_str().to_owned();
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    name.push(format!(".{}-{n}.partial", unique_id()));
    let tmp = PathBuf::from(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    // Written through the file just created (never reopened by its name),
    // on disk before it has the name readers trust, and the name too: a
    // power cut leaves the old object or the new one, never a hole.
    let written = write(&mut file)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for FolderStore {
    async fn get_file(
        &self,
        key: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<ObjectMeta, StoreError> {
        let src = self.path(key);
        let meta = file_meta(&src)?;
        if meta.size > max_bytes {
            return Err(StoreError::TooLarge {
                what: src.display().to_string(),
                limit: max_bytes,
            });
        }
        if src != dest {
            // Opened by the one input rule: a path swapped for a FIFO or a
            // device since the check is refused, not copied forever.
            let (mut from, _) = files::open_input(&src).map_err(|e| refused(&src, e))?;
            let mut to = std::fs::File::create(dest).map_err(|e| io_err(dest, e))?;
            let n = std::io::copy(
                &mut std::io::Read::take(&mut from, max_bytes.saturating_add(1)),
                &mut to,
            )
            .map_err(|e| io_err(&src, e))?;
            if n > max_bytes {
                return Err(StoreError::TooLarge {
                    what: src.display().to_string(),
                    limit: max_bytes,
                });
            }
        }
        Ok(meta)
    }

    async fn get_bytes(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let p = self.path(key);
        match files::read_capped(&p, max_bytes) {
            Ok(b) => Ok(Some(b)),
            Err(files::ReadCapped::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(files::ReadCapped::Io(e)) => Err(refused(&p, e)),
            Err(files::ReadCapped::TooLarge { limit }) => Err(StoreError::TooLarge {
                what: p.display().to_string(),
                limit,
            }),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        match file_meta(&self.path(key)) {
            Ok(m) => Ok(Some(m)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put_file(&self, key: &str, src: &Path) -> Result<(), StoreError> {
        let dest = self.write_path(key)?;
        // Same file system (a scratch folder under the root): a rename.
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        if std::fs::rename(src, &dest).is_ok() {
            return Ok(());
        }
        write_atomic(&dest, |tmp| {
            std::io::copy(&mut std::fs::File::open(src)?, tmp).map(|_| ())
        })
    }

    async fn put_bytes(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        write_atomic(&self.write_path(key)?, |tmp| {
            std::io::Write::write_all(tmp, &body)
        })
    }

    async fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
        let dir = self.write_path(prefix.trim_end_matches('/'))?;
        let entries = match std::fs::read_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            r => r.map_err(|e| io_err(&dir, e))?,
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            // Objects are regular files; a folder is a deeper prefix.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if keys.len() == max {
                return Err(StoreError::Permanent {
                    what: dir.display().to_string(),
                    reason: format!("more than {max} objects under it"),
                });
            }
            keys.push(format!("{prefix}{name}"));
        }
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let p = self.write_path(key)?;
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&p, e)),
            _ => Ok(()),
        }
    }

    fn describe(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tries writing one key at once: the object is one whole body,
    /// never a mix of both; a link planted under the old guessable temporary
    /// name is not followed; no temporary file is left behind.
    #[test]
    fn writes_of_one_key_at_once_never_mix_nor_follow_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let path = dir.path().join("k.json");
        std::os::unix::fs::symlink(&victim, dir.path().join("k.json.partial")).unwrap();
        let writers: Vec<_> = (0..8u8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let body = vec![b'a' + i; 1 << 20];
                        write_atomic(&path, |f| {
                            // Written in pieces, as a copy is: room to interleave.
                            use std::io::Write;
                            for chunk in body.chunks(4096) {
                                f.write_all(chunk)?;
                            }
                            Ok(())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 1 << 20);
        assert!(got.iter().all(|b| *b == got[0]), "two writers' bytes mixed");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".partial") && n != "k.json.partial")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
