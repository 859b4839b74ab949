//! The status card: the store's `status`, written into the home by the process that last closed
//! the store, so that `status` with no worker running answers without opening it (sled reads
//! its whole page table on open: 100+ ms at 100,000 jobs; BENCHMARKS.md).
//!
//! A card is trusted only while the store's files are exactly as they were just after it was
//! closed ([`crate::queue::fingerprint`]: size, times and inode of each file the backend writes;
//! any later write changes them) and only under the schema it was written with. Anything else
//! — a write since (another command, a worker, one killed before it could write its card), a
//! newer or older build, a damaged or oversized card — and `status` opens the store as before.
//! The card is a cache: nothing else reads it, and losing it loses nothing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::StatusReport;
use crate::queue::{codec::SCHEMA_VERSION, fingerprint, FileStamp};

/// The card's own layout; another value is not read.
const CARD_VERSION: u32 = 1;

/// A card larger than this is not read (a status report is a few hundred bytes).
const MAX_CARD_BYTES: u64 = 64 * 1024;

#[derive(Serialize, Deserialize)]
struct Card {
    /// [`CARD_VERSION`] when written.
    version: u32,
    /// The store's schema when written: a card of another schema describes another layout.
    schema: u8,
    /// The store's files just after it was closed.
    files: Vec<FileStamp>,
    /// What `status` said just before it was closed.
    report: StatusReport,
}

fn path(home_dir: &Path) -> PathBuf {
    home_dir.join("status-card.json")
}

/// The status of the store in `store_dir` as its card has it, if the card is still true.
pub fn read(home_dir: &Path, store_dir: &Path) -> Option<StatusReport> {
    let card: Card = crate::home::read_small_json(&path(home_dir), MAX_CARD_BYTES)?;
    if card.version != CARD_VERSION || card.schema != SCHEMA_VERSION {
        return None;
    }
    (fingerprint(store_dir)? == card.files).then_some(card.report)
}

/// Write the card of the store in `store_dir`, closed just now, whose status was `report`. A
/// card that cannot be written is no card (it is removed): `status` then opens the store.
pub fn write(home_dir: &Path, store_dir: &Path, mut report: StatusReport) {
    report.worker = None;
    let target = path(home_dir);
    let Some(files) = fingerprint(store_dir) else {
        let _ = std::fs::remove_file(&target);
        return;
    };
    let card = Card {
        version: CARD_VERSION,
        schema: SCHEMA_VERSION,
        files,
        report,
    };
    if let Err(e) = crate::home::replace_json(&target, &card) {
        tracing::debug!(error = %e, "no status card");
        let _ = std::fs::remove_file(&target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Counts;

    fn report(queued: u64) -> StatusReport {
        StatusReport {
            counts: Counts {
                queued,
                ..Counts::default()
            },
            worker: None,
            paused: true,
            store_path: "/x/store".into(),
            store_bytes: 1234,
            next_due: Some(42),
            quarantined: 0,
            open_batches: Vec::new(),
            open_batch_count: 0,
            tokens_per_sec: None,
        }
    }

    #[test]
    fn a_card_is_read_back_only_while_the_store_files_are_untouched() {
        let home = tempfile::tempdir().unwrap();
        let store = home.path().join("store");
        std::fs::create_dir(&store).unwrap();
        std::fs::write(store.join("db"), b"data").unwrap();
        std::fs::write(store.join("conf"), b"conf").unwrap();
        write(home.path(), &store, report(7));
        let back = read(home.path(), &store).expect("an untouched store keeps its card");
        assert_eq!(back.counts.queued, 7);
        assert_eq!(back.next_due, Some(42));
        assert!(back.paused);

        // A write of the same length in place: the times change.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(store.join("db"), b"DATA").unwrap();
        assert!(read(home.path(), &store).is_none(), "a written store");
        write(home.path(), &store, report(8));
        assert_eq!(read(home.path(), &store).unwrap().counts.queued, 8);

        // A new snapshot file, a file replaced by another (new inode), no data file at all.
        std::fs::write(store.join("snap.0001"), b"s").unwrap();
        assert!(read(home.path(), &store).is_none(), "a new snapshot");
        write(home.path(), &store, report(9));
        std::fs::rename(store.join("conf"), store.join("c2")).unwrap();
        std::fs::write(store.join("conf"), b"conf").unwrap();
        assert!(read(home.path(), &store).is_none(), "a replaced file");
        std::fs::remove_file(store.join("db")).unwrap();
        write(home.path(), &store, report(10));
        assert!(read(home.path(), &store).is_none(), "no data file, no card");
        assert!(!path(home.path()).exists());
    }

    #[test]
    fn a_card_of_another_schema_or_damaged_or_oversized_is_not_read() {
        let home = tempfile::tempdir().unwrap();
        let store = home.path().join("store");
        std::fs::create_dir(&store).unwrap();
        std::fs::write(store.join("db"), b"data").unwrap();
        write(home.path(), &store, report(1));
        let text = std::fs::read_to_string(path(home.path())).unwrap();
        let other = text.replacen(
            &format!("\"schema\":{SCHEMA_VERSION}"),
            &format!("\"schema\":{}", SCHEMA_VERSION - 1),
            1,
        );
        assert_ne!(other, text);
        std::fs::write(path(home.path()), other).unwrap();
        assert!(read(home.path(), &store).is_none(), "another schema");
        std::fs::write(path(home.path()), &text[..text.len() / 2]).unwrap();
        assert!(read(home.path(), &store).is_none(), "cut short");
        let mut huge = text.clone().into_bytes();
        huge.extend(std::iter::repeat_n(b' ', MAX_CARD_BYTES as usize));
        std::fs::write(path(home.path()), huge).unwrap();
        assert!(read(home.path(), &store).is_none(), "oversized");
        let mut rng = crate::fuzz::Rng(0x5eed_ca4d);
        for _ in 0..300 {
            let mut bytes = text.clone().into_bytes();
            crate::fuzz::mutate(&mut bytes, &mut rng);
            std::fs::write(path(home.path()), &bytes).unwrap();
            let _ = read(home.path(), &store); // never panics
        }
    }
}
