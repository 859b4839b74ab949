//! Poison jobs: telling a job that kills the worker from a death that came from outside. Pure:
//! the jobs in flight and their records in, verdicts out.
//!
//! The worker runs under a supervisor (see [`crate::supervise`]) that reads how the process
//! running inference died. A death it inflicted on itself — an abort (llama.cpp's asserts,
//! Rust's stack overflow), a segfault, a bus error, an illegal instruction, an arithmetic
//! trap — is a *crash*, and the jobs in flight are what it was doing. A `kill -9` or the OOM
//! killer (SIGKILL) is not: nobody is charged, the jobs resume.
//!
//! After a crash with one job in flight, that job is charged: it crashed the worker alone.
//! With several, none is charged yet: each becomes a *suspect* and runs alone (B = 1) before
//! other work; only one that crashes the worker alone is charged. An interactive chat decoding
//! beside a job counts as another in flight (it may have been the cause, and it is no stored
//! job to charge; see `supervise::ChatWitness`): the job is a suspect, not charged. A job charged `max_crashes`
//! times is given up (`dead`). A suspect that ends any other way (succeeded, failed for a
//! reason of its own, cancelled) is cleared.

use serde::{Deserialize, Serialize};

use crate::job::{JobId, Millis};

/// A job's crash record (tree `crashes`, schema 4).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CrashRecord {
    /// Crashes of the worker while this job ran alone.
    pub charged: u32,
    /// It was in flight at a crash, with others or alone: it runs alone until it ends.
    pub suspect: bool,
    /// The last crash it was in flight at: its signal's name and when.
    pub last_signal: String,
    pub last_at: Millis,
}

/// What a crash means for one job that was in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Crashed the worker alone: charged, and still to run alone.
    Charged { record: CrashRecord },
    /// Charged `max_crashes` times: give it up with this message.
    Dead { record: CrashRecord, error: String },
    /// In flight with others: not charged, runs alone next.
    Suspect { record: CrashRecord },
}

/// The fatal signals a process inflicts on itself, by number (the platform's), with their
/// names. Anything else that killed the runner (SIGKILL above all) came from outside.
pub fn self_inflicted(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGSYS => "SIGSYS",
        libc::SIGTRAP => "SIGTRAP",
        _ => return None,
    })
}

/// The verdicts of a crash by `signal` at `now` on the jobs that were in flight, each with its
/// record so far (default: none); `chats`: interactive chats were decoding beside them.
pub fn judge(
    in_flight: &[(JobId, CrashRecord)],
    chats: bool,
    signal: &str,
    now: Millis,
    max_crashes: u32,
) -> Vec<(JobId, Verdict)> {
    let alone = in_flight.len() == 1 && !chats;
    in_flight
        .iter()
        .map(|(id, before)| {
            let mut record = before.clone();
            record.suspect = true;
            record.last_signal = signal.to_string();
            record.last_at = now;
            let verdict = if !alone {
                Verdict::Suspect { record }
            } else {
                record.charged += 1;
                if record.charged >= max_crashes.max(1) {
                    // Given up: no longer to run, alone or not.
                    record.suspect = false;
                    let error = format!(
                        "the worker crashed {} times running this job alone (last: {signal}); \
                         `qwen3q retry {id}` runs it again",
                        record.charged
                    );
                    Verdict::Dead { record, error }
                } else {
                    Verdict::Charged { record }
                }
            };
            (*id, verdict)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(ids: &[u64]) -> Vec<(JobId, CrashRecord)> {
        ids.iter()
            .map(|&i| (JobId(i), CrashRecord::default()))
            .collect()
    }

    #[test]
    fn a_crash_with_several_in_flight_charges_nobody_and_makes_suspects() {
        let v = judge(&none(&[1, 2, 3]), false, "SIGSEGV", 10, 3);
        assert_eq!(v.len(), 3);
        for (_, verdict) in v {
            match verdict {
                Verdict::Suspect { record } => {
                    assert_eq!(record.charged, 0);
                    assert!(record.suspect);
                    assert_eq!(record.last_signal, "SIGSEGV");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_job_alone_is_charged_and_dies_at_max_crashes() {
        let mut records = none(&[7]);
        for n in 1..=3 {
            let v = judge(&records, false, "SIGABRT", n, 3);
            match &v[0].1 {
                Verdict::Charged { record } if n < 3 => {
                    assert_eq!(record.charged, n as u32);
                    records[0].1 = record.clone();
                }
                Verdict::Dead { record, error } if n == 3 => {
                    assert_eq!(record.charged, 3);
                    assert!(
                        error.starts_with(
                            "the worker crashed 3 times running this job alone (last: SIGABRT)"
                        ),
                        "{error}"
                    );
                }
                other => panic!("crash {n}: {other:?}"),
            }
        }
    }

    #[test]
    fn only_self_inflicted_signals_are_crashes() {
        for s in [
            libc::SIGABRT,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
        ] {
            assert!(self_inflicted(s).is_some(), "{s}");
        }
        for s in [libc::SIGKILL, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            assert!(self_inflicted(s).is_none(), "{s}");
        }
    }

    #[test]
    fn a_job_beside_a_chat_is_a_suspect_not_charged() {
        let v = judge(&none(&[7]), true, "SIGSEGV", 10, 1);
        match &v[..] {
            [(id, Verdict::Suspect { record })] => {
                assert_eq!(*id, JobId(7));
                assert_eq!(record.charged, 0);
                assert!(
                    record.suspect,
                    "it runs alone next, and only then can be charged"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
