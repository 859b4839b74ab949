//! Schema 5 → 6: documents larger than one part are written to files beside the database,
//! named from a new tree, `document_files` (`migrations/0006_document_files.md`). Documents
//! already stored stay in their parts, where they are read as before; no value's layout
//! changed, so nothing is rewritten ([`super::super::codec::READS_FROM`] stays 5). The tree
//! and the `documents/` directory are made when the store opens.

use super::super::{Result, SledStore};
use crate::queue::Queue;

pub fn run(store: &SledStore) -> Result<()> {
    store.flush()
}
