//! Power: keeping the machine awake while jobs run, and knowing whether it runs on battery.
//!
//! - macOS: `caffeinate -i -w <pid>` as a child holds an assertion against idle sleep (and ends
//!   by itself if the worker dies); `pmset -g batt` says AC or battery.
//! - Linux: `systemd-inhibit --what=idle:sleep … sleep infinity` where logind is reachable;
//!   `/sys/class/power_supply/*/{type,online}` says whether mains power is present.
//!
//! The parsing is pure and tested on every platform.

use std::process::{Child, Command, Stdio};

/// `pmset -g batt`'s first line: `Now drawing from 'AC Power'` or `'Battery Power'`.
pub fn pmset_on_battery(output: &str) -> Option<bool> {
    let first = output.lines().next()?;
    if first.contains("'Battery Power'") {
        Some(true)
    } else if first.contains("'AC Power'") {
        Some(false)
    } else {
        None
    }
}

/// Linux power supplies as (type, online) pairs: on battery when there is a mains supply and
/// none is online; `None` (treated as AC) on machines without a mains supply listed.
pub fn linux_on_battery(supplies: &[(String, String)]) -> Option<bool> {
    let mains: Vec<&(String, String)> = supplies
        .iter()
        .filter(|(t, _)| t.trim() == "Mains")
        .collect();
    if mains.is_empty() {
        return None;
    }
    Some(!mains.iter().any(|(_, online)| online.trim() == "1"))
}

/// Whether the machine runs on battery now (`None`: unknown, e.g. a desktop or server).
pub fn on_battery() -> Option<bool> {
    if cfg!(target_os = "macos") {
        let out = Command::new("pmset").args(["-g", "batt"]).output().ok()?;
        pmset_on_battery(&String::from_utf8_lossy(&out.stdout))
    } else {
        let supplies: Vec<(String, String)> = std::fs::read_dir("/sys/class/power_supply")
            .ok()?
            .filter_map(|e| {
                let dir = e.ok()?.path();
                let t = std::fs::read_to_string(dir.join("type")).ok()?;
                let online = std::fs::read_to_string(dir.join("online")).unwrap_or_default();
                Some((t, online))
            })
            .collect();
        linux_on_battery(&supplies)
    }
}

/// An assertion against idle sleep, held by a child process while jobs run.
#[derive(Default)]
pub struct KeepAwake {
    child: Option<Child>,
    /// The platform has no way to hold one (or it failed): do not try on every step.
    unavailable: bool,
}

impl KeepAwake {
    /// Hold the assertion (idempotent). Whether one is held.
    pub fn hold(&mut self) -> bool {
        if let Some(c) = self.child.as_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                return true;
            }
            self.child = None;
        }
        if self.unavailable {
            return false;
        }
        let pid = std::process::id().to_string();
        let mut cmd = if cfg!(target_os = "macos") {
            let mut c = Command::new("caffeinate");
            c.args(["-i", "-w", &pid]);
            c
        } else {
            let mut c = Command::new("systemd-inhibit");
            c.args([
                "--what=idle:sleep",
                "--who=qwen3q",
                "--why=documents are being processed",
                "--mode=block",
                "sleep",
                "infinity",
            ]);
            c
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match cmd.spawn() {
            Ok(mut child) => {
                // systemd-inhibit without a reachable logind exits at once.
                std::thread::sleep(std::time::Duration::from_millis(50));
                if matches!(child.try_wait(), Ok(Some(_))) {
                    self.unavailable = true;
                    return false;
                }
                tracing::info!("holding an assertion against idle sleep while jobs run");
                self.child = Some(child);
                true
            }
            Err(_) => {
                self.unavailable = true;
                false
            }
        }
    }

    /// Let the machine sleep again.
    pub fn release(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            tracing::info!("released the assertion against idle sleep");
        }
    }

    pub fn held(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmset_says_ac_or_battery() {
        let ac = "Now drawing from 'AC Power'\n -InternalBattery-0 (id=1234)\t100%; charged; 0:00 remaining present: true\n";
        let batt = "Now drawing from 'Battery Power'\n -InternalBattery-0 (id=1234)\t87%; discharging; 5:12 remaining present: true\n";
        assert_eq!(pmset_on_battery(ac), Some(false));
        assert_eq!(pmset_on_battery(batt), Some(true));
        assert_eq!(pmset_on_battery(""), None);
    }

    #[test]
    fn linux_supplies() {
        let s = |t: &str, o: &str| (t.to_string(), o.to_string());
        assert_eq!(
            linux_on_battery(&[s("Mains\n", "1\n"), s("Battery\n", "")]),
            Some(false)
        );
        assert_eq!(
            linux_on_battery(&[s("Mains\n", "0\n"), s("Battery\n", "")]),
            Some(true)
        );
        assert_eq!(linux_on_battery(&[s("Battery\n", "")]), None);
        assert_eq!(linux_on_battery(&[]), None);
    }

    #[test]
    fn keep_awake_holds_and_releases_or_says_it_cannot() {
        let mut k = KeepAwake::default();
        if k.hold() {
            assert!(k.held());
            assert!(k.hold(), "idempotent");
            k.release();
        }
        assert!(!k.held());
    }
}
