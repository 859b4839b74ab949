//! The real memory probe: sysinfo on both platforms (total, available, this process's RSS),
//! plus what each platform adds — the cgroup's limit and usage on Linux (v1 and v2), the
//! kernel's free share and pressure level on macOS (sysctl, no privileges needed) — and
//! llama.cpp's view of its devices, handed in by the caller (only the llama module sees
//! llama-cpp-2).

use sysinfo::{MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System};

use super::{DeviceMemory, MemoryProbe, MemorySnapshot};
use crate::job::Millis;

/// See the module docs.
pub struct SystemProbe {
    sys: Option<System>,
    pid: Pid,
    /// llama.cpp's devices (free and total memory), if an engine is linked in.
    devices: Option<fn() -> Vec<DeviceMemory>>,
}

impl SystemProbe {
    pub fn new(devices: Option<fn() -> Vec<DeviceMemory>>) -> Self {
        let sys = System::new_with_specifics(
            RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
        )
        .ok();
        SystemProbe {
            sys,
            pid: Pid::from_u32(std::process::id()),
            devices,
        }
    }
}

impl MemoryProbe for SystemProbe {
    fn sample(&mut self, now: Millis) -> MemorySnapshot {
        let (mut total, mut available, mut rss) = (0, 0, 0);
        if let Some(sys) = self.sys.as_mut() {
            sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
            sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[self.pid]),
                false,
                ProcessRefreshKind::nothing().with_memory(),
            );
            total = sys.total_memory();
            available = sys.available_memory();
            rss = sys.process(self.pid).map_or(0, |p| p.memory());
        }
        let mut snapshot = MemorySnapshot {
            at: now,
            total,
            available,
            process_rss: rss,
            free_percent: None,
            os_pressure: None,
            cgroup: None,
            devices: self.devices.map(|f| f()).unwrap_or_default(),
        };
        platform::add(&mut snapshot);
        snapshot
    }
}

#[cfg(target_os = "linux")]
mod platform {
    use super::super::parse;
    use super::super::{CgroupMemory, CgroupVersion, MemorySnapshot};

    fn read(path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    /// MemAvailable from /proc/meminfo (sysinfo's figure is the same, read here once more so
    /// the two cannot disagree), and this process's cgroup limit and working set: v2 first,
    /// else v1. Without a readable `memory.stat` no cache is subtracted (the cautious side).
    pub fn add(s: &mut MemorySnapshot) {
        if let Some((total, available)) = read("/proc/meminfo").as_deref().and_then(parse::meminfo)
        {
            s.total = total;
            s.available = available;
        }
        let Some(text) = read("/proc/self/cgroup") else {
            return;
        };
        let (v2, v1) = parse::cgroup_paths(&text);
        let from = |version: CgroupVersion, dir: String, limit: &str, usage: &str| {
            let stat = read(&format!("{dir}/memory.stat")).unwrap_or_default();
            Some(CgroupMemory {
                version,
                limit: parse::cgroup_limit(&read(&format!("{dir}/{limit}"))?)?,
                usage: parse::cgroup_usage(&read(&format!("{dir}/{usage}"))?)?,
                inactive_file: parse::cgroup_inactive_file(&stat, version).unwrap_or(0),
            })
        };
        s.cgroup = v2
            .and_then(|p| {
                let dir = format!("/sys/fs/cgroup{p}");
                from(CgroupVersion::V2, dir, "memory.max", "memory.current")
            })
            .or_else(|| {
                let dir = format!("/sys/fs/cgroup/memory{}", v1?);
                from(
                    CgroupVersion::V1,
                    dir,
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                )
            });
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use super::super::parse;
    use super::super::MemorySnapshot;

    /// An integer sysctl by name.
    fn sysctl_i32(name: &str) -> Option<i32> {
        let cname = std::ffi::CString::new(name).ok()?;
        let mut value: i32 = 0;
        let mut size = std::mem::size_of::<i32>();
        // SAFETY: value and size describe a valid i32 buffer; no new value is set.
        let rc = unsafe {
            libc::sysctlbyname(
                cname.as_ptr(),
                &mut value as *mut i32 as *mut libc::c_void,
                &mut size,
                std::ptr::null_mut(),
                0,
            )
        };
        (rc == 0).then_some(value)
    }

    /// `available_memory()` ignores compressed memory: the kernel's own free share and
    /// pressure level say what can be allocated without pressure.
    pub fn add(s: &mut MemorySnapshot) {
        s.free_percent = sysctl_i32("kern.memorystatus_level").and_then(parse::macos_free_percent);
        s.os_pressure =
            sysctl_i32("kern.memorystatus_vm_pressure_level").and_then(parse::macos_pressure);
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod platform {
    pub fn add(_: &mut super::super::MemorySnapshot) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_probe_reads_this_machine() {
        let mut p = SystemProbe::new(None);
        let s = p.sample(7);
        assert_eq!(s.at, 7);
        assert!(
            s.total > 0 && s.available > 0 && s.available <= s.total,
            "{s:?}"
        );
        assert!(s.process_rss > 0, "{s:?}");
        assert!(s.effective_available() <= s.available);
    }
}
