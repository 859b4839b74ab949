//! What the platforms report, parsed. Pure: text or numbers in, values out.

use super::{CgroupVersion, Pressure};

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some(kb * 1024)
        })
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

/// The cgroup paths of this process from `/proc/self/cgroup`: the v2 path (`0::/path`) and the
/// v1 memory controller's path (`N:memory:/path`, or a combined `N:cpu,memory:/path`).
pub fn cgroup_paths(text: &str) -> (Option<String>, Option<String>) {
    let mut v2 = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path.to_string());
        }
    }
    (v2, v1)
}

/// A cgroup memory limit file: v2 `memory.max` (`max` = none) or v1
/// `memory.limit_in_bytes` (a huge number near `i64::MAX` = none).
pub fn cgroup_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    let n: u64 = t.parse().ok()?;
    // v1 reports "no limit" as the largest page-aligned i64.
    (n < (1u64 << 62)).then_some(n)
}

/// A cgroup usage file (`memory.current`, `memory.usage_in_bytes`).
pub fn cgroup_usage(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// One field of a cgroup's `memory.stat` (lines of `name value`), in bytes.
fn memory_stat_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// The inactive file cache charged to a group, from its `memory.stat`: v1's hierarchical
/// `total_inactive_file` (its `usage_in_bytes` counts the group's children too), v2's
/// `inactive_file` (already hierarchical).
pub fn cgroup_inactive_file(stat: &str, version: CgroupVersion) -> Option<u64> {
    memory_stat_field(
        stat,
        match version {
            CgroupVersion::V2 => "inactive_file",
            CgroupVersion::V1 => "total_inactive_file",
        },
    )
}

/// macOS `kern.memorystatus_vm_pressure_level`: 1 normal, 2 warn, 4 critical.
pub fn macos_pressure(level: i32) -> Option<Pressure> {
    match level {
        1 => Some(Pressure::Normal),
        2 => Some(Pressure::Warn),
        4 => Some(Pressure::Critical),
        _ => None,
    }
}

/// macOS `kern.memorystatus_level`: percent of memory free (0–100).
pub fn macos_free_percent(level: i32) -> Option<u8> {
    (0..=100).contains(&level).then_some(level as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_gives_total_and_available_in_bytes() {
        let text = "MemTotal:       24591304 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo(text), Some((24591304 * 1024, 20000000 * 1024)));
        assert_eq!(meminfo("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn cgroup_paths_for_v1_and_v2() {
        let v1 = "12:pids:/user.slice\n4:memory:/qwen3q-test\n3:cpu,cpuacct:/\n";
        assert_eq!(cgroup_paths(v1), (None, Some("/qwen3q-test".into())));
        let v2 = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(
            cgroup_paths(v2),
            (
                Some("/user.slice/user-1000.slice/session-2.scope".into()),
                None
            )
        );
        let combined = "7:cpu,memory:/a\n0::/b\n";
        assert_eq!(
            cgroup_paths(combined),
            (Some("/b".into()), Some("/a".into()))
        );
    }

    #[test]
    fn cgroup_limits_know_no_limit_in_both_versions() {
        assert_eq!(cgroup_limit("max\n"), None);
        assert_eq!(cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(cgroup_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(cgroup_limit("garbage"), None);
        assert_eq!(cgroup_usage("4096\n"), Some(4096));
    }

    /// A v1 child group's `memory.stat` on this project's Linux 6.18 test machine, after a
    /// process in it wrote a 300 MB file and read it twice (so its cache went active).
    const V1_STAT: &str = "cache 314667008\nrss 0\nrss_huge 0\nshmem 0\nmapped_file 0\n\
        dirty 314572800\nwriteback 0\nworkingset_refault_anon 0\nworkingset_refault_file 0\n\
        swap 0\nswapcached 0\npgpgin 812\npgpgout 489\npgfault 770\npgmajfault 1\n\
        inactive_anon 0\nactive_anon 0\ninactive_file 86016\nactive_file 314580992\n\
        unevictable 0\nhierarchical_memory_limit 1006632960\n\
        hierarchical_memsw_limit 9223372036854771712\ntotal_cache 314667008\ntotal_rss 0\n\
        total_rss_huge 0\ntotal_shmem 0\ntotal_mapped_file 0\ntotal_dirty 314572800\n\
        total_writeback 0\ntotal_workingset_refault_anon 0\ntotal_workingset_refault_file 0\n\
        total_swap 0\ntotal_swapcached 0\ntotal_pgpgin 812\ntotal_pgpgout 489\n\
        total_pgfault 770\ntotal_pgmajfault 1\ntotal_inactive_anon 0\ntotal_active_anon 0\n\
        total_inactive_file 86016\ntotal_active_file 314580992\ntotal_unevictable 0\n";

    /// A v2 `memory.stat` as a 6.x kernel prints it (a root group under NixOS, published in a
    /// public note on containers): most of its file cache inactive.
    const V2_STAT: &str = "anon 2049646592\nfile 9518583808\nkernel 925802496\n\
        kernel_stack 7421952\npagetables 35082240\nsec_pagetables 0\npercpu 1328040\n\
        sock 24576\nvmalloc 1527808\nshmem 18305024\nzswap 0\nzswapped 0\n\
        file_mapped 761057280\nfile_dirty 372736\nfile_writeback 0\nswapcached 12288\n\
        anon_thp 0\nfile_thp 0\nshmem_thp 8388608\ninactive_anon 5353472\n\
        active_anon 2052427776\ninactive_file 8647675904\nactive_file 852815872\n\
        unevictable 9949184\nslab_reclaimable 864684480\nslab_unreclaimable 13514760\n\
        slab 878199240\nworkingset_refault_anon 0\nworkingset_refault_file 4247\n\
        workingset_activate_anon 0\nworkingset_activate_file 4236\n\
        workingset_restore_anon 0\nworkingset_restore_file 26\nworkingset_nodereclaim 1536\n\
        pgscan 1629223\npgsteal 1570393\npgfault 2567200536\npgmajfault 2890\n\
        pgrefill 215649\npgactivate 2344\npgdeactivate 0\nthp_fault_alloc 0\n";

    #[test]
    fn inactive_file_cache_from_real_memory_stat_texts() {
        // v1: the hierarchical total, not the group's own line (equal here; the name differs).
        assert_eq!(
            cgroup_inactive_file(V1_STAT, CgroupVersion::V1),
            Some(86016)
        );
        // v2's own field; `inactive_anon` and `workingset_*` lines are not it.
        assert_eq!(
            cgroup_inactive_file(V2_STAT, CgroupVersion::V2),
            Some(8647675904)
        );
        // The other version's name is absent from each text: no reading rather than a wrong one.
        assert_eq!(cgroup_inactive_file(V2_STAT, CgroupVersion::V1), None);
        assert_eq!(cgroup_inactive_file("", CgroupVersion::V2), None);
        assert_eq!(
            cgroup_inactive_file("inactive_file x\n", CgroupVersion::V2),
            None
        );
        assert_eq!(
            cgroup_inactive_file(
                "inactive_file_extra 5\ninactive_file 7\n",
                CgroupVersion::V2
            ),
            Some(7)
        );
    }

    #[test]
    fn macos_levels() {
        assert_eq!(macos_pressure(1), Some(Pressure::Normal));
        assert_eq!(macos_pressure(2), Some(Pressure::Warn));
        assert_eq!(macos_pressure(4), Some(Pressure::Critical));
        assert_eq!(macos_pressure(3), None);
        assert_eq!(macos_free_percent(47), Some(47));
        assert_eq!(macos_free_percent(-1), None);
        assert_eq!(macos_free_percent(101), None);
    }
}
