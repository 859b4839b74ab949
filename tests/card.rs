//! `status` with no worker running answers from the status card the last process to close the
//! store left, only while the store is exactly as it was closed; after a `kill -9` (no card
//! written) it opens the store, and always says what the store says.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// `status --json` and whether it came from the card (`-vv` logs it). The store's size is
/// left out: opening a sled store grows its file (a new segment), so it is the size as of the
/// last close on the card and a little more after an open.
fn status(h: &TestHome) -> (Value, bool) {
    let out = h.run(&["-vv", "status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let mut report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["store_bytes"].as_u64().unwrap() > 0, "{report}");
    report["store_bytes"] = Value::Null;
    (report, err.contains("status from the card"))
}

/// The same status, read from the store itself (the card removed first).
fn from_the_store(h: &TestHome) -> Value {
    let _ = std::fs::remove_file(h.path().join("status-card.json"));
    let (report, carded) = status(h);
    assert!(!carded);
    report
}

#[test]
fn status_without_a_worker_reads_the_card_only_while_the_store_is_as_it_was_closed() {
    let h = TestHome::new();
    for i in 0..3 {
        h.doc(&format!("d{i}.txt"), &prose(i, 30));
    }
    h.enqueue_tiny(&h.path().join("docs"), "4");
    // The enqueue closed the store and left its card.
    let (card, carded) = status(&h);
    assert!(carded, "the enqueue's card");
    assert_eq!(count(&card, "queued"), 3);
    // Reading the store gives the same answer (and leaves a card again).
    assert_eq!(from_the_store(&h), card);
    assert!(status(&h).1);

    // A worker that drains and exits leaves its card.
    h.ok(&["worker", "--drain"]);
    let (card, carded) = status(&h);
    assert!(carded, "the worker's card");
    assert_eq!(count(&card, "succeeded"), 3);
    assert_eq!(from_the_store(&h), card);

    // A worker killed with -9 leaves none, and its work since the last card is in the store:
    // status opens it and says so.
    let mut worker = h.spawn_worker(&[]);
    h.wait_for_worker(&mut worker);
    h.doc("late.txt", &prose(9, 30));
    h.enqueue_tiny(&h.path().join("docs/late.txt"), "4");
    wait_until(Duration::from_secs(60), "the late job", || {
        count(&h.status(), "succeeded") == 4
    });
    kill_9_worker(&h, &mut worker);
    let (after, carded) = status(&h);
    assert!(!carded, "a card older than the store is not read");
    assert_eq!(count(&after, "succeeded"), 4, "{after}");
    assert!(after["worker"].is_null(), "{after}");
    // That status closed the store: its card answers the next.
    let (again, carded) = status(&h);
    assert!(carded);
    assert_eq!(again, after);
}
