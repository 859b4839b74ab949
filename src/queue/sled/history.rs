//! The memory history in the store: samples at full resolution, and one-minute averages of
//! older ones. Written by the worker's sampler without a flush per sample (a sample lost in a
//! crash costs nothing); the sampler flushes every few seconds.

use super::trees::t;
use super::{codec, Result, SledStore};
use crate::job::Millis;
use crate::monitor::history::{downsample_minutes, Sample};
use crate::queue::{MemoryHistory, Queue};

impl MemoryHistory for SledStore {
    fn record_sample(&self, sample: &Sample) -> Result<()> {
        self.tree(t::MEMORY_SAMPLES)
            .insert(sample.at.to_be_bytes(), codec::encode(sample)?)?;
        Ok(())
    }

    fn samples_since(&self, since: Millis) -> Result<Vec<Sample>> {
        let mut out: Vec<Sample> = Vec::new();
        for tree in [t::MEMORY_MINUTES, t::MEMORY_SAMPLES] {
            let first_full = out.last().map(|s| s.at);
            for v in self.tree(tree).range(since.to_be_bytes()..).values() {
                let s: Sample = codec::decode(&v?)?;
                if tree == t::MEMORY_SAMPLES && first_full.is_some_and(|f| s.at <= f) {
                    continue;
                }
                out.push(s);
            }
        }
        out.sort_by_key(|s| s.at);
        Ok(out)
    }

    fn compact_history(&self, now: Millis, full_ms: u64, keep_ms: u64) -> Result<(usize, usize)> {
        // Whole minutes only, so that a minute is never averaged twice.
        let cut = now.saturating_sub(full_ms) / 60_000 * 60_000;
        let samples = self.tree(t::MEMORY_SAMPLES);
        let old: Vec<(sled::IVec, Sample)> = samples
            .range(..cut.to_be_bytes())
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k, codec::decode::<Sample>(&v)?))
            })
            .collect::<Result<_>>()?;
        let minutes = self.tree(t::MEMORY_MINUTES);
        let folded: Vec<Sample> = old.iter().map(|(_, s)| s.clone()).collect();
        for m in downsample_minutes(&folded) {
            minutes.insert(m.at.to_be_bytes(), codec::encode(&m)?)?;
        }
        for (k, _) in &old {
            samples.remove(k)?;
        }
        let drop_before = now.saturating_sub(keep_ms);
        let expired: Vec<sled::IVec> = minutes
            .range(..drop_before.to_be_bytes())
            .keys()
            .collect::<std::result::Result<_, _>>()?;
        for k in &expired {
            minutes.remove(k)?;
        }
        self.flush()?;
        Ok((old.len(), expired.len()))
    }
}

#[cfg(test)]
mod tests {
    use crate::monitor::history::test_sample as s;
    use crate::queue::prelude::*;
    use crate::queue::test_support::temp_store;

    #[test]
    fn old_samples_fold_into_minutes_and_very_old_minutes_go() {
        let (_d, store) = temp_store();
        let day = 86_400_000u64;
        let now = 40 * day;
        // Two samples in one minute 10 days ago, one 35 days ago, two recent ones.
        for (at, used) in [
            (now - 10 * day, 10.0),
            (now - 10 * day + 1_000, 30.0),
            (now - 35 * day, 50.0),
            (now - 5_000, 60.0),
            (now - 1_000, 70.0),
        ] {
            store.record_sample(&s(at, used)).unwrap();
        }
        let (folded, dropped) = store.compact_history(now, day, 30 * day).unwrap();
        assert_eq!((folded, dropped), (3, 1));
        let all = store.samples_since(0).unwrap();
        let used: Vec<f64> = all.iter().map(|s| s.used_percent).collect();
        assert_eq!(
            used,
            [20.0, 60.0, 70.0],
            "one minute average, then full resolution"
        );
        assert_eq!(store.samples_since(now - 2_000).unwrap().len(), 1);
    }
}
