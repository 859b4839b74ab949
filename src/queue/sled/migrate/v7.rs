//! Schema 6 → 7: the number of jobs in each state is kept in `meta/jobs_in<state>`, moved in
//! the transaction that moves a job (`migrations/0007_state_totals.md`), so `status` no longer
//! counts the `by_state` index. This step counts it once and writes the totals. No value's
//! layout changed ([`super::super::codec::READS_FROM`] stays 5). Idempotent: a step cut short
//! counts again.

use super::super::codec;
use super::super::trees::{meta, t};
use super::super::{Result, SledStore};
use crate::job::StateKind;
use crate::queue::Queue;

pub fn run(store: &SledStore) -> Result<()> {
    let counts = store.scan_counts()?;
    let tree = store.tree(t::META);
    for kind in StateKind::ALL {
        tree.insert(meta::jobs_in(kind), codec::encode_as(7, &counts.get(kind))?)?;
    }
    store.flush()
}

#[cfg(test)]
mod tests {
    use super::super::super::test_support::{result_for, spec, temp_store};
    use super::*;
    use crate::job::JobId;
    use crate::queue::{JobReads, JobWrites, NewJob};

    /// Every kind of move, chosen by a seeded generator, 600 of them: after each, the totals
    /// the transactions kept equal a count of the index; then the migration's count is the same.
    #[test]
    fn the_totals_every_move_keeps_equal_a_count_of_the_index() {
        let (_d, store) = temp_store();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n.max(1)
        };
        let mut now = 1_000u64;
        let mut made = 0usize;
        for step in 0..600 {
            now += 1 + next(40_000);
            let known = made as u64;
            let some = JobId(1 + next(known.max(1)));
            match next(12) {
                0 | 1 => {
                    let items: Vec<NewJob> = (0..1 + next(4))
                        .map(|_| {
                            made += 1;
                            NewJob {
                                spec: spec(&format!("d{made}")),
                                text: format!("text {made}"),
                            }
                        })
                        .collect();
                    store.enqueue(&items, false, now).unwrap();
                }
                2 | 3 => {
                    if let Some(job) = store.claim(now, 60_000).unwrap() {
                        match next(4) {
                            0 => store.complete(job.id, &result_for(&job, now), now).unwrap(),
                            1 => drop(store.fail(job.id, "boom", next(2) == 0, now, 0.5).unwrap()),
                            2 => store.release(job.id, now, "shutdown").unwrap(),
                            _ => store.defer(job.id, now, now + 50_000, "memory").unwrap(),
                        }
                    }
                }
                4 => drop(store.promote_due(now).unwrap()),
                5 => drop(store.person_cancel(some, now, next(2) == 0)),
                6 => drop(store.retry(some, now, next(2) == 0)),
                7 => drop(store.wake(some, now, "woken")),
                8 => drop(store.recover(now).unwrap()),
                9 if step % 5 == 0 => drop(store.prune(now.saturating_sub(100_000)).unwrap()),
                10 if known > 0 => {
                    // A damaged value, quarantined when next read.
                    let id = some;
                    if store.job(id).unwrap().is_some() {
                        store.damage_job_for_tests(id);
                        drop(store.job(id).unwrap());
                    }
                }
                _ => drop(store.claim(now, 60_000).unwrap()),
            }
            assert_eq!(
                store.counts().unwrap(),
                store.scan_counts().unwrap(),
                "step {step}"
            );
        }
        let kept = store.counts().unwrap();
        assert!(kept.total() > 20, "the moves left jobs behind: {kept:?}");
        for slot in [kept.queued, kept.succeeded, kept.dead] {
            assert!(slot > 0, "every common state reached: {kept:?}");
        }
        run(&store).unwrap();
        // The steps after this one, as a store opened by this build runs them.
        super::super::v8::run(&store).unwrap();
        super::super::v9::run(&store).unwrap();
        assert_eq!(store.counts().unwrap(), kept);
    }
}
