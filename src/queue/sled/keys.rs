//! Big-endian key encodings, so that sled's byte order is numeric order (as in sled's
//! `examples/structured.rs`). Pure.

use crate::job::{BatchId, JobId, Millis, StateKind};

/// `jobs`, `results`, `documents` prefix, `checkpoints` prefix, `events` prefix.
pub fn job(id: JobId) -> [u8; 8] {
    id.0.to_be_bytes()
}

pub fn job_from(key: &[u8]) -> Option<JobId> {
    Some(JobId(u64::from_be_bytes(key.get(..8)?.try_into().ok()?)))
}

/// Maps a signed priority onto bytes that sort *descending* by priority: higher first.
fn priority_desc(priority: i32) -> [u8; 4] {
    // Flip the sign bit to make i32 order unsigned order, then invert to make it descending.
    (!((priority as u32) ^ 0x8000_0000)).to_be_bytes()
}

/// `ready` index (schema 9): higher priority first, then the earliest deadline (none: last),
/// then enqueue order (the job id is monotonic).
pub fn ready(priority: i32, deadline: Option<Millis>, id: JobId) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&priority_desc(priority));
    k[4..12].copy_from_slice(&deadline.unwrap_or(Millis::MAX).to_be_bytes());
    k[12..].copy_from_slice(&job(id));
    k
}

pub fn ready_job(key: &[u8]) -> Option<JobId> {
    job_from(key.get(12..)?)
}

/// `batches`, `batch_counts`, `open_batches`: the batch's number.
pub fn batch(id: BatchId) -> [u8; 8] {
    id.0.to_be_bytes()
}

pub fn batch_from(key: &[u8]) -> Option<BatchId> {
    Some(BatchId(u64::from_be_bytes(key.get(..8)?.try_into().ok()?)))
}

/// `batch_jobs`: the batch, then the job (a batch's jobs in enqueue order, one prefix).
pub fn batch_job(batch_id: BatchId, id: JobId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&batch(batch_id));
    k[8..].copy_from_slice(&job(id));
    k
}

pub fn batch_job_parts(key: &[u8]) -> Option<(BatchId, JobId)> {
    Some((batch_from(key)?, job_from(key.get(8..)?)?))
}

/// `delayed` index: jobs that may not run before a time (backoff, `--not-before`), by due time.
pub fn delayed(due: Millis, id: JobId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&due.to_be_bytes());
    k[8..].copy_from_slice(&job(id));
    k
}

pub fn delayed_parts(key: &[u8]) -> Option<(Millis, JobId)> {
    let due = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    Some((due, job_from(key.get(8..)?)?))
}

/// `by_state` index: state byte, then job id. Listing a state or recovering Running jobs
/// scans one prefix, never every job.
pub fn by_state(kind: StateKind, id: JobId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = kind as u8;
    k[1..].copy_from_slice(&job(id));
    k
}

pub fn by_state_prefix(kind: StateKind) -> [u8; 1] {
    [kind as u8]
}

/// `documents`: job id, then part number (a long text is split into values of at most 64 KiB).
/// `checkpoints`: job id, then chunk number. Same shape, so one encoding.
pub fn job_part(id: JobId, part: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&job(id));
    k[8..].copy_from_slice(&part.to_be_bytes());
    k
}

pub fn job_part_parts(key: &[u8]) -> Option<(JobId, u32)> {
    let part = u32::from_be_bytes(key.get(8..12)?.try_into().ok()?);
    Some((job_from(key)?, part))
}

/// `events`: job id, then a store-wide monotonic sequence number.
pub fn event(id: JobId, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&job(id));
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for id in [0, 1, 255, 256, u64::MAX] {
            assert_eq!(job_from(&job(JobId(id))), Some(JobId(id)));
            assert_eq!(ready_job(&ready(-5, Some(9), JobId(id))), Some(JobId(id)));
            assert_eq!(ready_job(&ready(-5, None, JobId(id))), Some(JobId(id)));
            assert_eq!(
                batch_job_parts(&batch_job(BatchId(id), JobId(3))),
                Some((BatchId(id), JobId(3)))
            );
            assert_eq!(
                delayed_parts(&delayed(123_456, JobId(id))),
                Some((123_456, JobId(id)))
            );
            assert_eq!(
                job_part_parts(&job_part(JobId(id), 7)),
                Some((JobId(id), 7))
            );
        }
        assert_eq!(job_from(&[1, 2]), None);
    }

    #[test]
    fn job_keys_sort_numerically() {
        let ids = [1u64, 2, 9, 10, 255, 256, 65_536, 1 << 40];
        let mut keys: Vec<_> = ids.iter().map(|&i| job(JobId(i))).collect();
        keys.sort();
        let back: Vec<u64> = keys.iter().map(|k| job_from(k).unwrap().0).collect();
        assert_eq!(back, ids);
    }

    #[test]
    fn ready_sorts_by_priority_descending_then_id() {
        let mut entries = [
            (0, 3u64),
            (10, 5),
            (-3, 1),
            (0, 2),
            (10, 4),
            (i32::MAX, 9),
            (i32::MIN, 8),
        ];
        let mut keys: Vec<_> = entries
            .iter()
            .map(|&(p, i)| ready(p, None, JobId(i)))
            .collect();
        keys.sort();
        let got: Vec<u64> = keys.iter().map(|k| ready_job(k).unwrap().0).collect();
        entries.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let want: Vec<u64> = entries.iter().map(|e| e.1).collect();
        assert_eq!(got, want);
        assert_eq!(got, vec![9, 4, 5, 2, 3, 1, 8]);
    }

    #[test]
    fn ready_puts_the_earliest_deadline_first_within_a_priority() {
        // (priority, deadline, id): a deadline beats none, an earlier one a later one, and
        // priority beats both.
        let entries = [
            (0, None, 1u64),
            (0, Some(500), 2),
            (0, Some(100), 3),
            (5, None, 4),
            (0, Some(100), 5),
            (-1, Some(1), 6),
        ];
        let mut keys: Vec<_> = entries
            .iter()
            .map(|&(p, d, i)| ready(p, d, JobId(i)))
            .collect();
        keys.sort();
        let got: Vec<u64> = keys.iter().map(|k| ready_job(k).unwrap().0).collect();
        assert_eq!(got, vec![4, 3, 5, 2, 1, 6]);
    }

    #[test]
    fn delayed_sorts_by_due_time() {
        let mut keys = [
            delayed(300, JobId(1)),
            delayed(100, JobId(2)),
            delayed(256, JobId(3)),
        ];
        keys.sort();
        let due: Vec<u64> = keys.iter().map(|k| delayed_parts(k).unwrap().0).collect();
        assert_eq!(due, vec![100, 256, 300]);
    }

    #[test]
    fn by_state_groups_by_state_prefix() {
        let k = by_state(StateKind::Running, JobId(42));
        assert!(k.starts_with(&by_state_prefix(StateKind::Running)));
        assert!(!k.starts_with(&by_state_prefix(StateKind::Queued)));
        assert_eq!(job_from(&k[1..]), Some(JobId(42)));
    }

    #[test]
    fn parts_and_events_sort_within_a_job() {
        let mut keys = [
            job_part(JobId(2), 0),
            job_part(JobId(1), 300),
            job_part(JobId(1), 2),
        ];
        keys.sort();
        assert_eq!(job_part_parts(&keys[0]), Some((JobId(1), 2)));
        assert_eq!(job_part_parts(&keys[2]), Some((JobId(2), 0)));
        assert!(event(JobId(1), 500) < event(JobId(1), 501));
        assert!(event(JobId(1), u64::MAX) < event(JobId(2), 0));
    }
}
