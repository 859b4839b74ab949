//! What the platforms report, parsed. Pure: text or numbers in, values out.

use super::Pressure;

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
