//! Memory readings: the seam [`MemoryProbe`] (the real [`system::SystemProbe`], and
//! [`ScriptedProbe`] for tests) and the reading itself, [`MemorySnapshot`]. Parsing of what the
//! platforms report (`/proc/meminfo`, cgroup v1 and v2 files, macOS sysctl values) lives in pure
//! functions in [`parse`], unit-tested on every platform.

pub mod history;
pub mod parse;
pub mod plot;
pub mod system;

use serde::{Deserialize, Serialize};

use crate::job::Millis;

/// How hard the system is pressed for memory, as macOS reports it
/// (`kern.memorystatus_vm_pressure_level`: 1, 2, 4) or as derived from the share in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pressure {
    Normal,
    Warn,
    Critical,
}

/// Which cgroup interface a reading came from (Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

impl std::fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// A cgroup's memory limit and what the group uses now (Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupMemory {
    pub version: CgroupVersion,
    pub limit: u64,
    /// What the kernel charges to the group (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`): page cache included, even the cache it reclaims on demand.
    pub usage: u64,
    /// Inactive file cache charged to the group (v1 `total_inactive_file`, v2
    /// `inactive_file` of `memory.stat`): reclaimed first when the group nears its limit.
    pub inactive_file: u64,
}

impl CgroupMemory {
    /// What the group really holds: usage less its inactive file cache (the kubelet's and
    /// Docker's "working set"). Only this counts against the limit for the gate: a model
    /// file read or unloaded earlier leaves cache behind that the kernel takes back on demand.
    pub fn working_set(&self) -> u64 {
        self.usage.saturating_sub(self.inactive_file)
    }
}

/// One device's memory as llama.cpp sees it (CPU, Metal, CUDA…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMemory {
    pub name: String,
    pub free: u64,
    pub total: u64,
}

/// One reading of memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemorySnapshot {
    pub at: Millis,
    /// Physical memory.
    pub total: u64,
    /// What the OS says can be allocated without swapping (Linux MemAvailable; macOS: free +
    /// inactive + purgeable, which overstates it: see `free_percent` and `pressure`).
    pub available: u64,
    /// This process's resident memory.
    pub process_rss: u64,
    /// macOS `kern.memorystatus_level`: percent of memory free, as `memory_pressure` prints.
    pub free_percent: Option<u8>,
    /// The OS's own pressure level where it has one (macOS), else derived from use.
    pub os_pressure: Option<Pressure>,
    /// The limit of the cgroup this process runs in, if it has one (Linux).
    pub cgroup: Option<CgroupMemory>,
    pub devices: Vec<DeviceMemory>,
}

impl MemorySnapshot {
    /// What can really be allocated now: the least of what the system has available, what the
    /// cgroup limit leaves beyond the group's working set, and (macOS) the free share the
    /// kernel reports. Reclaimable page cache counts as available in each: `MemAvailable`
    /// includes it, the working set excludes the inactive part, and macOS counts file-backed
    /// pages as free.
    pub fn effective_available(&self) -> u64 {
        let mut avail = self.available;
        if let Some(cg) = self.cgroup {
            avail = avail.min(cg.limit.saturating_sub(cg.working_set()));
        }
        if let Some(p) = self.free_percent {
            avail = avail.min(self.total / 100 * p as u64);
        }
        avail
    }

    /// The memory that counts as total: the cgroup limit when there is one below RAM.
    pub fn effective_total(&self) -> u64 {
        match self.cgroup {
            Some(cg) if cg.limit < self.total => cg.limit,
            _ => self.total,
        }
    }

    /// Share of the effective total in use, in percent.
    pub fn used_percent(&self) -> f64 {
        let total = self.effective_total().max(1);
        (total.saturating_sub(self.effective_available())) as f64 * 100.0 / total as f64
    }
}

/// A reading with only total and available memory, for tests.
#[cfg(test)]
pub(crate) fn plain_snapshot(total: u64, available: u64) -> MemorySnapshot {
    MemorySnapshot {
        at: 0,
        total,
        available,
        process_rss: 0,
        free_percent: None,
        os_pressure: None,
        cgroup: None,
        devices: vec![],
    }
}

/// Where memory readings come from.
pub trait MemoryProbe: Send {
    fn sample(&mut self, now: Millis) -> MemorySnapshot;
}

/// Readings given in advance, for tests: each `sample` takes the next; the last repeats.
pub struct ScriptedProbe {
    pub readings: Vec<MemorySnapshot>,
    next: usize,
}

impl ScriptedProbe {
    pub fn new(readings: Vec<MemorySnapshot>) -> Self {
        ScriptedProbe { readings, next: 0 }
    }
}

impl MemoryProbe for ScriptedProbe {
    fn sample(&mut self, now: Millis) -> MemorySnapshot {
        let i = self.next.min(self.readings.len().saturating_sub(1));
        self.next += 1;
        let mut s = self.readings[i].clone();
        s.at = now;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    use super::plain_snapshot as snap;

    #[test]
    fn a_cgroup_limit_and_the_macos_free_share_bound_what_is_available() {
        let mut s = snap(24 * GIB, 20 * GIB);
        assert_eq!(s.effective_available(), 20 * GIB);
        s.cgroup = Some(CgroupMemory {
            version: CgroupVersion::V1,
            limit: 2 * GIB,
            usage: GIB / 2,
            inactive_file: 0,
        });
        assert_eq!(s.effective_available(), GIB + GIB / 2);
        assert_eq!(s.effective_total(), 2 * GIB);
        assert!((s.used_percent() - 25.0).abs() < 0.01);
        // Inactive file cache in the group is not in use: only the working set counts.
        s.cgroup = Some(CgroupMemory {
            version: CgroupVersion::V2,
            limit: 2 * GIB,
            usage: 2 * GIB - 4096,
            inactive_file: GIB + GIB / 2,
        });
        assert_eq!(s.effective_available(), GIB + GIB / 2 + 4096);
        // More inactive cache than usage (the two files are read apart): nothing in use.
        s.cgroup = Some(CgroupMemory {
            version: CgroupVersion::V1,
            limit: 2 * GIB,
            usage: GIB,
            inactive_file: GIB + 1,
        });
        assert_eq!(s.effective_available(), 2 * GIB);
        let mut mac = snap(16 * GIB, 10 * GIB);
        mac.free_percent = Some(30);
        assert_eq!(mac.effective_available(), 16 * GIB / 100 * 30);
    }

    #[test]
    fn a_scripted_probe_plays_its_readings_then_repeats_the_last() {
        let mut p = ScriptedProbe::new(vec![snap(10, 5), snap(10, 2)]);
        assert_eq!(p.sample(1).available, 5);
        assert_eq!(p.sample(2).available, 2);
        let last = p.sample(3);
        assert_eq!((last.available, last.at), (2, 3));
    }
}
