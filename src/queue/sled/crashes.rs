//! Crash records (tree `crashes`, schema 4): what a crash of the worker is charged to, which
//! jobs are suspects and run alone, and clearing them when a job ends. The decisions are
//! [`crate::crash`]'s; this applies them in one transaction each.

use super::trees::t;
use super::tx::{enc, Tx, TxResult};
use super::{codec, keys, Result, SledStore};
use crate::crash::{judge, CrashRecord, Verdict};
use crate::job::{JobId, JobState, Millis, StateKind};
use crate::queue::{Crashes, JobReads, Queue};

impl Crashes for SledStore {
    fn crash_record(&self, id: JobId) -> Result<Option<CrashRecord>> {
        match self.tree(t::CRASHES).get(keys::job(id))? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    fn suspects(&self) -> Result<Vec<JobId>> {
        let mut out = Vec::new();
        for kv in self.tree(t::CRASHES).iter() {
            let (k, v) = kv?;
            let record: CrashRecord = codec::decode(&v)?;
            if let (true, Some(id)) = (record.suspect, keys::job_from(&k)) {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn record_crash(
        &self,
        chats: bool,
        signal: &str,
        now: Millis,
        max_crashes: u32,
    ) -> Result<Vec<(JobId, Verdict)>> {
        let in_flight = self.ids_in_state(StateKind::Running)?;
        let mut records = Vec::with_capacity(in_flight.len());
        for id in in_flight {
            records.push((id, self.crash_record(id)?.unwrap_or_default()));
        }
        let verdicts = judge(&records, chats, signal, now, max_crashes);
        let beside = match verdicts.len() {
            1 if chats => "1 job and interactive chats".to_string(),
            n if chats => format!("{n} jobs and interactive chats"),
            n => format!("{n} jobs"),
        };
        self.transact(|tx| {
            for (id, verdict) in &verdicts {
                apply(tx, *id, verdict, signal, &beside, now)?;
            }
            Ok(())
        })?;
        self.flush()?;
        Ok(verdicts)
    }
}

impl SledStore {
    /// A person's retry gives a job a fresh start: its crash record goes.
    pub(super) fn forget_crashes(tx: &Tx, id: JobId) -> TxResult<()> {
        tx.0[t::CRASHES].remove(&keys::job(id))?;
        Ok(())
    }
}

/// Record one verdict and move the job out of Running.
fn apply(
    tx: &Tx,
    id: JobId,
    verdict: &Verdict,
    signal: &str,
    in_flight: &str,
    now: Millis,
) -> TxResult<()> {
    let Some(mut job) = tx.job(id)? else {
        return Ok(());
    };
    if job.state.kind() != StateKind::Running {
        return Ok(());
    }
    let (record, next, reason) = match verdict {
        Verdict::Suspect { record } => (
            record,
            JobState::Queued,
            format!(
                "the worker crashed ({signal}) with {in_flight} in flight; not charged: runs \
                 alone next"
            ),
        ),
        Verdict::Charged { record } => (
            record,
            JobState::Queued,
            format!(
                "the worker crashed ({signal}) running this job alone: crash {} charged; runs \
                 alone again",
                record.charged
            ),
        ),
        Verdict::Dead { record, error } => (
            record,
            JobState::Dead {
                error: error.clone(),
                attempts: job.attempts,
            },
            error.clone(),
        ),
    };
    tx.0[t::CRASHES].insert(&keys::job(id), enc(record)?)?;
    tx.transition(&mut job, next, now, reason, None)
}

/// A job ended another way than by a crash (succeeded, failed for its own reason,
/// cancelled): no longer a suspect; a record with no charge is removed.
pub(super) fn job_ended(tx: &Tx, id: JobId) -> TxResult<()> {
    let Some(v) = tx.0[t::CRASHES].get(keys::job(id))? else {
        return Ok(());
    };
    let mut record: CrashRecord = match codec::decode(&v) {
        Ok(r) => r,
        Err(_) => {
            tx.0[t::CRASHES].remove(&keys::job(id))?;
            return Ok(());
        }
    };
    if record.charged == 0 {
        tx.0[t::CRASHES].remove(&keys::job(id))?;
    } else if record.suspect {
        record.suspect = false;
        tx.0[t::CRASHES].insert(&keys::job(id), enc(&record)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::crash::Verdict;
    use crate::job::{JobId, JobState, StateKind};
    use crate::queue::prelude::*;
    use crate::queue::test_support::temp_store;

    fn running(store: &crate::queue::sled::SledStore, n: usize) -> Vec<JobId> {
        crate::queue::test_support::enqueue_n(store, n);
        (0..n)
            .map(|_| store.claim(1, 60_000).unwrap().unwrap().id)
            .collect()
    }

    #[test]
    fn a_crash_with_several_in_flight_makes_suspects_and_alone_charges_to_death() {
        let (_d, store) = temp_store();
        let ids = running(&store, 3);
        let v = store.record_crash(false, "SIGSEGV", 2, 3).unwrap();
        assert_eq!(v.len(), 3);
        assert!(v.iter().all(|(_, v)| matches!(v, Verdict::Suspect { .. })));
        assert_eq!(store.suspects().unwrap(), ids);
        for id in &ids {
            assert_eq!(store.job(*id).unwrap().unwrap().state, JobState::Queued);
        }
        // The first suspect runs alone and crashes it three times: dead, with the reason.
        let first = ids[0];
        for crash in 1..=3 {
            assert_eq!(
                store.claim_job(first, 3, 60_000).unwrap().unwrap().id,
                first
            );
            let v = store.record_crash(false, "SIGABRT", 3, 3).unwrap();
            assert_eq!(v.len(), 1);
            let record = store.crash_record(first).unwrap().unwrap();
            assert_eq!(record.charged, crash);
        }
        match store.job(first).unwrap().unwrap().state {
            JobState::Dead { error, .. } => assert!(
                error.contains("crashed 3 times running this job alone (last: SIGABRT)"),
                "{error}"
            ),
            other => panic!("{other:?}"),
        }
        // The second ends normally alone: cleared.
        let second = ids[1];
        store.claim_job(second, 4, 60_000).unwrap().unwrap();
        store
            .fail(second, "its own failure", false, 5, 0.5)
            .unwrap();
        assert!(store.crash_record(second).unwrap().is_none());
        assert_eq!(store.suspects().unwrap(), vec![ids[2]]);
        assert_eq!(
            store.job(second).unwrap().unwrap().state.kind(),
            StateKind::Failed
        );
    }
}
