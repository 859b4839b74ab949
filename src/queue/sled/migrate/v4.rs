//! Schema 3 → 4: a new tree, `crashes` (`migrations/0004_crashes.md`). No value's layout
//! changed, so nothing is rewritten: values written by schema 3 decode as they are
//! ([`super::super::codec::READS_FROM`]). The tree is made when the store opens.

use super::super::{Result, SledStore};
use crate::queue::Queue;

pub fn run(store: &SledStore) -> Result<()> {
    store.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::codec::{self, encode_as};
    use crate::queue::prelude::*;
    use crate::queue::sled::trees::{meta, t};

    #[test]
    fn a_version_3_store_reads_as_it_is_and_gets_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = SledStore::open(&path, &Default::default()).unwrap();
            store
                .tree(t::META)
                .insert(meta::SCHEMA_VERSION, &[3])
                .unwrap();
            store
                .tree(t::META)
                .insert(meta::PAUSED, encode_as(3, &true).unwrap())
                .unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(&path, &Default::default()).unwrap();
        assert_eq!(
            super::super::stored_version(&store).unwrap(),
            Some(codec::SCHEMA_VERSION)
        );
        assert!(
            store.paused().unwrap(),
            "a version-3 value decodes as it is"
        );
        // Step 4 left it as it was; step 5 gave it its version byte.
        let raw = store.tree(t::META).get(meta::PAUSED).unwrap().unwrap();
        assert_eq!(raw[0], codec::SCHEMA_VERSION);
        assert!(store.tree(t::CRASHES).is_empty());
    }
}
