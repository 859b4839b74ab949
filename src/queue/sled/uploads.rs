//! Files uploaded through the HTTP API (schema 9): the record in `uploads`, the text in a file
//! of `documents/` written as a large document's is (durable before the record that names it;
//! checked on every read; swept when no record names it).

use super::files::DocFile;
use super::trees::{meta, t};
use super::tx::enc;
use super::{codec, io_error, Result, SledStore};
use crate::job::Millis;
use crate::queue::{Queue, Uploads};
use crate::upload::{FileId, FileInfo};

/// An upload as sled keeps it: what callers see, and where its text lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredUpload {
    pub info: FileInfo,
    pub doc: DocFile,
}

impl SledStore {
    fn stored_upload(&self, id: FileId) -> Result<Option<StoredUpload>> {
        match self.tree(t::UPLOADS).get(key(id))? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// The names of the files the uploads' records name (the sweep keeps them).
    pub(super) fn upload_file_names(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for v in self.tree(t::UPLOADS).iter().values() {
            out.push(codec::decode::<StoredUpload>(&v?)?.doc.name);
        }
        Ok(out)
    }
}

fn key(id: FileId) -> [u8; 8] {
    id.0.to_be_bytes()
}

impl Uploads for SledStore {
    fn add_upload(
        &self,
        filename: &str,
        purpose: &str,
        text: &str,
        lines: u64,
        now: Millis,
    ) -> Result<FileInfo> {
        let _writing = self.doc_writes.read().unwrap_or_else(|e| e.into_inner());
        let doc = self
            .files
            .write_all(&[text])
            .map_err(io_error)?
            .pop()
            .expect("one file for one text");
        let stored = self.transact(|tx| {
            let id = FileId(tx.counter(meta::NEXT_FILE_ID)?);
            let stored = StoredUpload {
                info: FileInfo {
                    id,
                    filename: filename.to_string(),
                    purpose: purpose.to_string(),
                    created: now,
                    bytes: text.len() as u64,
                    lines,
                },
                doc: doc.clone(),
            };
            tx.0[t::UPLOADS].insert(&key(id), enc(&stored)?)?;
            tx.add_to(meta::DOCUMENT_FILE_BYTES, i128::from(doc.bytes))?;
            Ok(stored)
        });
        let stored = match stored {
            Ok(s) => s,
            Err(e) => {
                // Named by nobody: the sweep would take it; no need to wait.
                self.files.remove([doc.name.as_str()]);
                return Err(e);
            }
        };
        self.flush()?;
        Ok(stored.info)
    }

    fn upload(&self, id: FileId) -> Result<Option<FileInfo>> {
        Ok(self.stored_upload(id)?.map(|s| s.info))
    }

    fn uploads(&self, after: Option<FileId>, limit: usize) -> Result<Vec<FileInfo>> {
        let end = key(after.unwrap_or(FileId(u64::MAX)));
        let mut out = Vec::new();
        for v in self.tree(t::UPLOADS).range(..end).values().rev() {
            if out.len() >= limit {
                break;
            }
            out.push(codec::decode::<StoredUpload>(&v?)?.info);
        }
        Ok(out)
    }

    fn upload_text(&self, id: FileId) -> Result<Option<String>> {
        let Some(stored) = self.stored_upload(id)? else {
            return Ok(None);
        };
        self.files
            .read(&stored.doc)
            .map(Some)
            .map_err(|e| super::StoreError::Io(format!("{id}: {e}")))
    }

    fn remove_upload(&self, id: FileId) -> Result<bool> {
        let Some(stored) = self.stored_upload(id)? else {
            return Ok(false);
        };
        self.transact(|tx| {
            tx.0[t::UPLOADS].remove(&key(id))?;
            tx.add_to(meta::DOCUMENT_FILE_BYTES, -i128::from(stored.doc.bytes))?;
            Ok(())
        })?;
        // The record is gone on disk before its file is.
        self.flush()?;
        self.files.remove([stored.doc.name.as_str()]);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;
    use crate::queue::JobWrites;

    #[test]
    fn an_upload_comes_back_whole_newest_first_and_goes_with_its_file() {
        let (dir, store) = temp_store();
        let a = store
            .add_upload("a.jsonl", "batch", "{\"x\":1}\n", 1, 10)
            .unwrap();
        let b = store
            .add_upload("b.jsonl", "batch", "{\"y\":2}\n", 1, 11)
            .unwrap();
        assert_eq!((a.id, b.id), (FileId(1), FileId(2)));
        assert_eq!(store.upload_text(a.id).unwrap().unwrap(), "{\"x\":1}\n");
        let ids: Vec<FileId> = store
            .uploads(None, 10)
            .unwrap()
            .iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(ids, [FileId(2), FileId(1)]);
        let page: Vec<FileId> = store
            .uploads(Some(FileId(2)), 10)
            .unwrap()
            .iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(page, [FileId(1)]);
        // The worker's sweep of orphan document files keeps uploads.
        store.recover(20).unwrap();
        assert_eq!(store.upload_text(b.id).unwrap().unwrap(), "{\"y\":2}\n");
        let docs = || {
            std::fs::read_dir(dir.path().join("store/documents"))
                .unwrap()
                .count()
        };
        assert_eq!(docs(), 2);
        assert!(store.remove_upload(a.id).unwrap());
        assert!(!store.remove_upload(a.id).unwrap());
        assert_eq!(store.upload(a.id).unwrap(), None);
        assert_eq!(docs(), 1);
    }
}
