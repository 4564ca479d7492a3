//! Files LoopMind reads as input, opened by one function for every reader
//! (the folder store, the local walk, settings files): a regular file or a
//! named refusal, and never more bytes than the reader's limit.

use std::fs::{File, FileType, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a path names when it is not a regular file or a folder, in words
/// for an error: "a FIFO", "a character device"...; None for a file, a
/// folder or a link.
pub fn special_kind(t: &FileType) -> Option<&'static str> {
    if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        None
    }
}

/// Opens `path` for reading if it is a regular file (links followed). A
/// FIFO, device or socket is refused by name, without blocking: the open
/// is non-blocking (a FIFO with no writer would hang it) and the type is
/// read from the opened file, so a path swapped after a check cannot slip
/// through.
pub fn open_input(path: &Path) -> std::io::Result<(File, Metadata)> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let m = f.metadata()?;
    if let Some(kind) = special_kind(&m.file_type()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{kind}, not a regular file"),
        ));
    }
    if m.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a folder, not a file",
        ));
    }
    Ok((f, m))
}

/// Why a capped read returned no bytes.
#[derive(Debug, thiserror::Error)]
pub enum ReadCapped {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file holds more than the limit (it is never read past it).
    #[error("larger than {limit} bytes")]
    TooLarge { limit: u64 },
}

/// The whole of a regular file of at most `max_bytes`; a larger one is
/// refused after reading at most `max_bytes + 1` bytes, whatever its size
/// said when it was opened.
pub fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadCapped> {
    let (f, m) = open_input(path)?;
    if m.len() > max_bytes {
        return Err(ReadCapped::TooLarge { limit: max_bytes });
    }
    let mut body = Vec::with_capacity(m.len() as usize);
    f.take(max_bytes.saturating_add(1)).read_to_end(&mut body)?;
    if body.len() as u64 > max_bytes {
        return Err(ReadCapped::TooLarge { limit: max_bytes });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mix.wav");
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = open_input(&p).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let e = open_input(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
    }

    #[test]
    fn a_read_stops_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("doc.json");
        std::fs::write(&p, vec![b'x'; 1000]).unwrap();
        assert_eq!(read_capped(&p, 1000).unwrap().len(), 1000);
        assert!(matches!(
            read_capped(&p, 999),
            Err(ReadCapped::TooLarge { limit: 999 })
        ));
    }
}
