//! Documents larger than one part live in files beside the sled database (schema 6), in
//! `<store>/documents/`: sled keeps, for each such job, a [`DocFile`] naming its file.
//!
//! Why: sled holds what was written to it in memory long after the write (its cache does not
//! evict under a write-only load), so a 1 GiB enqueue of large documents took the process past
//! 300 MiB; documents of one part stay in sled, where small files enqueue fastest.
//!
//! Order, for `kill -9` at any point: the files of a batch are written under fresh names and
//! made durable *before* the transaction that names them commits. A file that no committed
//! job names (the process died in between, the transaction failed, the document turned out
//! to be a job already) is an orphan: removed at once where the writer knows it is one, else
//! by [`DocFiles::sweep`] when the worker starts. The store excludes the sweep from enqueues
//! in flight (`SledStore::doc_writes`), and only one process opens a store: no file about to
//! be named can be swept. Removing a job (prune) removes its file after the transaction.
//!
//! Everything read back is checked: a file name from the store must be 32 hex digits (no path
//! from stored bytes), the file's length must be the recorded one (read no further, whatever
//! the record claims), and the text must hash to the recorded SHA-256. A file damaged or gone
//! is that job's error ([`FileError::is_permanent`]); a failed read (no descriptor free, an
//! I/O error) may pass. Neither stops the worker.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::ingest::MAX_DOCUMENT_BYTES;

use sha2::{Digest, Sha256};

/// Where a document's text lives (tree `document_files`, by job id).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DocFile {
    /// The file's name in `documents/`: 32 hex digits, unique to this job.
    pub name: String,
    /// The text's length in bytes.
    pub bytes: u64,
    /// The text's SHA-256, checked on every read.
    pub sha256: [u8; 32],
}

/// Why a document's file cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the stored file name {0:?} is not one this store writes")]
    BadName(String),
    #[error("its file {0} is missing")]
    Missing(String),
    #[error("its file {name} holds {found} bytes, {expected} were written")]
    Length {
        name: String,
        found: u64,
        expected: u64,
    },
    #[error("its file {0} does not hold the text written (checksum)")]
    Checksum(String),
    #[error("its file {0} is not UTF-8 text")]
    NotText(String),
    #[error("reading its file {name}: {error}")]
    Io { name: String, error: std::io::Error },
}

impl FileError {
    /// The file is gone or does not hold what was written: no retry can help. A failed read
    /// ([`FileError::Io`]) may pass.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, FileError::Io { .. })
    }
}

/// The largest document file read back: the largest document ingest takes, grown by its
/// decoding to UTF-8 (UTF-16 text grows by half at most).
const MAX_FILE_BYTES: u64 = MAX_DOCUMENT_BYTES / 2 * 3;

/// The `documents/` directory of one store.
#[derive(Debug)]
pub struct DocFiles {
    dir: PathBuf,
}

/// Names are made from the text's hash, the time, the process and a counter: unique without a
/// random source, whatever the text.
static NAMES: AtomicU64 = AtomicU64::new(0);

fn fresh_name(sha: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(sha);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.update(nanos.to_be_bytes());
    h.update(std::process::id().to_be_bytes());
    h.update(NAMES.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let digest: [u8; 32] = h.finalize().into();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A name this store writes: 32 lowercase hex digits (nothing else is ever opened or removed).
pub(crate) fn valid_name(name: &str) -> bool {
    name.len() == 32
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl DocFiles {
    /// The documents directory of the store at `store_dir`, made (0700) if missing.
    pub fn open(store_dir: &Path) -> std::io::Result<DocFiles> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = store_dir.join("documents");
        if !dir.is_dir() {
            std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
            sync_dir(store_dir)?;
        }
        Ok(DocFiles { dir })
    }

    /// Write `texts`, each to a file of its own (0600), and make them all durable before
    /// returning: what a transaction may then name. On an error, the files written so far are
    /// removed.
    pub fn write_all(&self, texts: &[&str]) -> std::io::Result<Vec<DocFile>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut written: Vec<DocFile> = Vec::with_capacity(texts.len());
        let result = (|| {
            // Opened before the first write: Linux's syncfs reports the write-back errors
            // recorded since its descriptor was opened (5.8 on).
            let batch = Batch::start(&self.dir)?;
            for text in texts {
                let sha: [u8; 32] = Sha256::digest(text.as_bytes()).into();
                let name = fresh_name(&sha);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(self.dir.join(&name))?;
                written.push(DocFile {
                    name,
                    bytes: text.len() as u64,
                    sha256: sha,
                });
                f.write_all(text.as_bytes())?;
                batch.written(&f)?;
            }
            batch.durable()
        })();
        match result {
            Ok(()) => Ok(written),
            Err(e) => {
                self.remove(written.iter().map(|d| d.name.as_str()));
                Err(e)
            }
        }
    }

    /// The text of `doc`, checked.
    pub fn read(&self, doc: &DocFile) -> Result<String, FileError> {
        if !valid_name(&doc.name) {
            return Err(FileError::BadName(doc.name.clone()));
        }
        let name = || doc.name.clone();
        let io = |error: std::io::Error| FileError::Io {
            name: name(),
            error,
        };
        let file = match std::fs::File::open(self.dir.join(&doc.name)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(FileError::Missing(name()))
            }
            Err(e) => return Err(io(e)),
        };
        // The file's length must be the recorded one, and neither is believed past the
        // largest document: no allocation follows a damaged record or a grown file.
        let on_disk = file.metadata().map_err(io)?.len();
        if on_disk != doc.bytes || on_disk > MAX_FILE_BYTES {
            return Err(FileError::Length {
                name: name(),
                found: on_disk,
                expected: doc.bytes,
            });
        }
        let mut bytes = Vec::with_capacity(on_disk as usize);
        file.take(on_disk).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 != on_disk {
            return Err(FileError::Length {
                name: name(),
                found: bytes.len() as u64,
                expected: doc.bytes,
            });
        }
        if <[u8; 32]>::from(Sha256::digest(&bytes)) != doc.sha256 {
            return Err(FileError::Checksum(name()));
        }
        String::from_utf8(bytes).map_err(|_| FileError::NotText(name()))
    }

    /// Remove files by name (best effort: one left behind is an orphan the next sweep takes).
    pub fn remove<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names.into_iter().filter(|n| valid_name(n)) {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }

    /// Remove the files no job names (`named`); files the store did not write (other names)
    /// stay. The caller keeps enqueues out meanwhile. How many went.
    pub fn sweep(&self, named: &HashSet<String>) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if valid_name(&name)
                && !named.contains(&name)
                && std::fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }
}

/// Making a batch of files durable, with the directory's entries naming them. Linux: one
/// `syncfs` for the whole batch (a flush per file would cost a disk flush each), on a
/// descriptor opened before the first write; elsewhere each file's own `fsync` as it is
/// written (macOS's `F_FULLFSYNC` through std), then the directory's.
struct Batch {
    /// The documents directory, opened when the batch starts.
    dir: std::fs::File,
}

impl Batch {
    fn start(dir: &Path) -> std::io::Result<Batch> {
        Ok(Batch {
            dir: std::fs::File::open(dir)?,
        })
    }

    #[cfg(target_os = "linux")]
    fn written(&self, _: &std::fs::File) -> std::io::Result<()> {
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn written(&self, f: &std::fs::File) -> std::io::Result<()> {
        f.sync_all()
    }

    #[cfg(target_os = "linux")]
    fn durable(self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; syncfs only reads it.
        if unsafe { libc::syncfs(self.dir.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn durable(self) -> std::io::Result<()> {
        self.dir.sync_all()
    }
}

/// Make a directory's entries (a file created or removed in it) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_comes_back_checked_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = DocFiles::open(dir.path()).unwrap();
        let texts = ["é".repeat(70_000), "second".repeat(20_000)];
        let docs = files
            .write_all(&texts.iter().map(String::as_str).collect::<Vec<_>>())
            .unwrap();
        assert_ne!(docs[0].name, docs[1].name);
        assert_eq!(files.read(&docs[0]).unwrap(), texts[0]);
        let path = dir.path().join("documents").join(&docs[1].name);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A flipped byte, a cut file, a missing one, a name that walks out of the directory.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(files.read(&docs[1]), Err(FileError::Checksum(_))));
        std::fs::write(&path, &bytes[..100]).unwrap();
        assert!(matches!(
            files.read(&docs[1]),
            Err(FileError::Length { .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(files.read(&docs[1]), Err(FileError::Missing(_))));
        let evil = DocFile {
            name: "../../etc/passwd".into(),
            ..docs[0].clone()
        };
        assert!(matches!(files.read(&evil), Err(FileError::BadName(_))));
        // A record claiming exabytes opens the file and reads nothing.
        let huge = DocFile {
            bytes: u64::MAX,
            ..docs[0].clone()
        };
        assert!(matches!(files.read(&huge), Err(FileError::Length { .. })));
        // A file grown past the largest document (sparse: nothing is written) is not read,
        // even with a record that agrees.
        let grown = dir.path().join("documents").join(&docs[0].name);
        std::fs::File::options()
            .write(true)
            .open(&grown)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        let agreeing = DocFile {
            bytes: MAX_FILE_BYTES + 1,
            ..docs[0].clone()
        };
        assert!(matches!(
            files.read(&agreeing),
            Err(FileError::Length { .. })
        ));
    }

    #[test]
    fn the_sweep_takes_only_files_of_its_own_that_no_job_names() {
        let dir = tempfile::tempdir().unwrap();
        let files = DocFiles::open(dir.path()).unwrap();
        let docs = files.write_all(&["a", "b", "c"]).unwrap();
        std::fs::write(dir.path().join("documents/notes.txt"), "not ours").unwrap();
        let named: HashSet<String> = [docs[0].name.clone()].into();
        assert_eq!(files.sweep(&named), 2);
        assert!(dir.path().join("documents/notes.txt").exists());
        assert_eq!(files.read(&docs[0]).unwrap(), "a");
        assert!(matches!(files.read(&docs[1]), Err(FileError::Missing(_))));
    }
}
