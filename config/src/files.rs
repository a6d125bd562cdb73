//! Reading the files a configuration names, with a bound: each must be a regular file
//! within a size limit. `/dev/zero`, `/dev/urandom`, a FIFO or a folder is refused
//! before anything is read, and nothing past the limit is ever held in memory.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The limit for an errorfile and a waiting-room page.
pub const PAGE_LIMIT: u64 = 64 * 1024;
/// The limit for a certificate or key file.
pub const PEM_LIMIT: u64 = 1024 * 1024;
/// The limit for the configuration file itself.
pub const CONFIG_LIMIT: u64 = 16 * 1024 * 1024;

/// Why a named file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("cannot read {0}: permission denied")]
    PermissionDenied(String),
    #[error("{path} is {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    #[error("cannot read {path}: {err}")]
    Io { path: String, err: std::io::Error },
}

/// What kind of file this is, for the message.
fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads `path` whole if it is a regular file of at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let p = || path.display().to_string();
    // Non-blocking: opening a FIFO must not wait for a writer.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nonblock())
        .open(path)
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => FileError::NotFound(p()),
            std::io::ErrorKind::PermissionDenied => FileError::PermissionDenied(p()),
            _ => FileError::Io { path: p(), err },
        })?;
    let meta = f
        .metadata()
        .map_err(|err| FileError::Io { path: p(), err })?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular {
            path: p(),
            kind: kind_of(meta.file_type()),
        });
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge { path: p(), limit });
    }
    read_at_most(f, limit).map_err(|e| match e {
        None => FileError::TooLarge { path: p(), limit },
        Some(err) => FileError::Io { path: p(), err },
    })
}

/// Reads to the end, refusing (None) past `limit` bytes: the file may grow after the
/// size was checked.
fn read_at_most(f: File, limit: u64) -> Result<Vec<u8>, Option<std::io::Error>> {
    let mut out = Vec::new();
    f.take(limit + 1).read_to_end(&mut out).map_err(Some)?;
    if out.len() as u64 > limit {
        return Err(None);
    }
    Ok(out)
}

/// `O_NONBLOCK` without a libc dependency: the same value on every Linux target.
const fn libc_o_nonblock() -> i32 {
    0o4000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_before_reading() {
        for (p, kind) in [
            ("/dev/zero", "a character device"),
            ("/dev/urandom", "a character device"),
            ("/tmp", "a folder"),
        ] {
            match read_bounded(Path::new(p), PAGE_LIMIT) {
                Err(FileError::NotRegular { kind: k, .. }) => assert_eq!(k, kind, "{p}"),
                other => panic!("{p}: {other:?}"),
            }
        }
        assert!(matches!(
            read_bounded(Path::new("/nonexistent/x"), PAGE_LIMIT),
            Err(FileError::NotFound(_))
        ));
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let d = std::env::temp_dir().join(format!("cfg-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("page.html");
        let st = std::process::Command::new("mkfifo")
            .arg(&f)
            .status()
            .unwrap();
        assert!(st.success(), "mkfifo");
        assert!(matches!(
            read_bounded(&f, PAGE_LIMIT),
            Err(FileError::NotRegular {
                kind: "a FIFO (named pipe)",
                ..
            })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_past_its_limit_is_refused() {
        let d = std::env::temp_dir().join(format!("cfg-files-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("big.html");
        std::fs::write(&f, vec![b'x'; 2000]).unwrap();
        assert!(matches!(
            read_bounded(&f, 1999),
            Err(FileError::TooLarge { limit: 1999, .. })
        ));
        assert_eq!(read_bounded(&f, 2000).unwrap().len(), 2000);
        let _ = std::fs::remove_dir_all(&d);
    }
}
