//! File mechanics every other module writes through: files written
//! atomically, leftovers of interrupted writes, and content hashes.
//!
//! A file is written to a temporary file beside it, synced and renamed over
//! the final name (and the folder synced, so that the rename itself survives
//! a power cut), so a crash, a full disk or Ctrl-C leaves the old content or
//! the new, never a part. Temporary files are named after the file they
//! become (`.model.bpk.tmp-XXXXXX`), so that one left behind by a killed
//! process is recognised and removed by the next run, and is never taken for
//! the file itself.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

/// Why a file could not be written.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{} is a folder, not a file", path.display())]
    IsFolder { path: PathBuf },
}

impl FileError {
    /// A failed write of `path`, said once and without the name of the
    /// temporary file it went through (which `tempfile` adds to its errors).
    pub(crate) fn write(path: &Path, source: io::Error) -> Self {
        FileError::Write {
            path: path.to_path_buf(),
            source: without_temp_path(source),
        }
    }
}

/// `e` without the " at path ..." that `tempfile` appends to its errors.
fn without_temp_path(e: io::Error) -> io::Error {
    let text = e.to_string();
    match text.find(" at path ") {
        Some(end) => io::Error::new(e.kind(), &text[..end]),
        None => e,
    }
}

/// Lower-case hex SHA-256 of the parts, one after the other.
pub fn sha256_hex<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hex(&hasher.finalize())
}

/// The SHA-256 of the first part, of the first two, and so on: each byte
/// is hashed once however many of the sums it is in.
pub(crate) fn sha256_hex_running<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<String> {
    let mut hasher = Sha256::new();
    parts
        .into_iter()
        .map(|part| {
            hasher.update(part);
            hex(&hasher.clone().finalize())
        })
        .collect()
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of the file at `path`, or `None` when it holds more than `max`:
/// never more than `max + 1` bytes are read, whatever the file is (a pipe,
/// a device, a file that grows as it is read).
pub(crate) fn read_at_most(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = fs::File::open(path)?;
    // Sized from the file's length where it has one, so that a large file
    // is read into one allocation (growing by doubling would hold two).
    let size = file.metadata().map_or(0, |m| m.len()).min(max + 1);
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// Prefix of the temporary files that become `path`.
fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    format!(".{name}.tmp-")
}

/// The folder `path` is in (`.` for a bare file name).
pub(crate) fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn refuse_folder(path: &Path) -> Result<(), FileError> {
    if path.is_dir() {
        return Err(FileError::IsFolder {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` so that `path` holds either its old content or
/// all of the new, never a part: temp file in the same folder, fsync, rename,
/// fsync of the folder.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let err = |source| FileError::write(path, source);
    refuse_folder(path)?;
    let mut builder = tempfile::Builder::new();
    let prefix = temp_prefix(path);
    builder.prefix(&prefix);
    // Temp files are private (0600) by default; the result should get the
    // usual permissions (0666 less the umask) like any file a tool writes.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(folder_of(path)).map_err(err)?;
    tmp.as_file_mut().write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    sync_folder(folder_of(path));
    Ok(())
}

/// Makes a rename in `folder` durable, where the system allows: only Unix
/// opens a folder to sync it, and not every folder or file system lets it
/// (one writable but not readable, say). The file is in place either way.
pub(crate) fn sync_folder(folder: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = fs::File::open(folder) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = folder;
}

/// Makes sure `path` can be written: its folder exists (it is created) and
/// takes new files, and `path` is not a folder. Checked before any work, so
/// that a bad location fails at once rather than after the first epoch.
pub fn check_writable(path: &Path) -> Result<(), FileError> {
    refuse_folder(path)?;
    let folder = folder_of(path);
    let err = |source| FileError::write(path, source);
    fs::create_dir_all(folder).map_err(err)?;
    tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .tempfile_in(folder)
        .map_err(err)?;
    Ok(())
}

/// Removes temporary files that a killed process left on the way to `path`.
/// Returns how many it removed.
pub(crate) fn remove_stale_temps(path: &Path) -> usize {
    let prefix = temp_prefix(path);
    let Ok(entries) = fs::read_dir(folder_of(path)) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomically(&path, b"old").unwrap();
        write_atomically(&path, b"new content").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new content");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The same permissions as any newly created file (not tempfile's 0600).
            let usual = dir.path().join("usual");
            fs::write(&usual, b"").unwrap();
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(mode(&path), mode(&usual));
        }
    }

    #[test]
    fn stale_temp_files_are_found_by_name_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bpk");
        fs::write(dir.path().join(".model.bpk.tmp-abc123"), b"half").unwrap();
        fs::write(dir.path().join(".other.bpk.tmp-abc123"), b"keep").unwrap();
        fs::write(&path, b"real").unwrap();
        assert_eq!(remove_stale_temps(&path), 1);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".other.bpk.tmp-abc123", "model.bpk"]);
    }

    #[test]
    fn a_folder_is_neither_written_nor_taken_for_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomically(dir.path(), b"x").unwrap_err().to_string();
        assert!(err.ends_with("is a folder, not a file"), "{err}");
        let err = check_writable(dir.path()).unwrap_err().to_string();
        assert!(err.ends_with("is a folder, not a file"), "{err}");
        check_writable(&dir.path().join("new/f")).unwrap();
        assert!(dir.path().join("new").is_dir(), "the folder is created");
        assert_eq!(fs::read_dir(dir.path().join("new")).unwrap().count(), 0);
    }

    #[test]
    fn running_sums_are_the_sums_of_each_prefix() {
        let parts = [&b"ab"[..], &b"c"[..]];
        assert_eq!(
            sha256_hex_running(parts),
            [sha256_hex([parts[0]]), sha256_hex(parts)]
        );
    }

    #[test]
    fn sha256_hashes_the_parts_as_one() {
        assert_eq!(
            sha256_hex([&b"ab"[..], &b"c"[..]]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
