//! A person at the machine (`yield_when_active = "5m"`): how long since they last touched it.
//!
//! - macOS: IOKit's `HIDIdleTime` (nanoseconds since the last keyboard, mouse or trackpad
//!   event), read from `ioreg -c IOHIDSystem`.
//! - Linux: logind's idle hint for the user (`loginctl show-user UID -p IdleHint -p
//!   IdleSinceHint`): not idle means someone is there now; idle says since when
//!   (microseconds since the epoch). Where logind knows no session of the user (a server, a
//!   container), it is not supported, and the worker says so in one line.
//!
//! The parsing is pure and tested, on every platform, with real outputs of those commands.

use std::process::Command;

/// How the worker yields to a person at the machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum YieldTo {
    /// Claim nothing new while they are there (the jobs already running go on).
    #[default]
    Pause,
    /// Claim a job only when none runs: B drops to 1.
    B1,
}

/// The first `"HIDIdleTime" = N` of `ioreg -c IOHIDSystem`'s output, in milliseconds.
pub fn ioreg_idle_ms(output: &str) -> Option<u64> {
    output.lines().find_map(|l| {
        let (_, rest) = l.split_once("\"HIDIdleTime\" = ")?;
        let ns: u64 = rest.trim().parse().ok()?;
        Some(ns / 1_000_000)
    })
}

/// What logind says of the user, from `loginctl show-… -p IdleHint -p IdleSinceHint` (or a
/// whole `show-session`): milliseconds idle at `now_ms`; 0 when not idle. `None` when it says
/// neither (no session known).
pub fn logind_idle_ms(output: &str, now_ms: u64) -> Option<u64> {
    let value = |key: &str| {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
    };
    match value("IdleHint")? {
        "no" => Some(0),
        "yes" => {
            let since_us: u64 = value("IdleSinceHint")?.parse().ok()?;
            // 0: idle, since a time logind did not record: as long as can be said.
            Some(if since_us == 0 {
                u64::MAX
            } else {
                now_ms.saturating_sub(since_us / 1000)
            })
        }
        _ => None,
    }
}

/// Whether the person counts as active: they touched the machine within `threshold_ms`.
pub fn active(idle_ms: u64, threshold_ms: u64) -> bool {
    idle_ms < threshold_ms
}

/// How long the person has been away, in milliseconds; `Err` with why it cannot be known
/// here.
pub fn idle_ms(now_ms: u64) -> Result<u64, String> {
    if cfg!(target_os = "macos") {
        let out = Command::new("ioreg")
            .args(["-c", "IOHIDSystem"])
            .output()
            .map_err(|e| format!("ioreg: {e}"))?;
        return ioreg_idle_ms(&String::from_utf8_lossy(&out.stdout))
            .ok_or_else(|| "ioreg shows no HIDIdleTime".into());
    }
    // loginctl takes a user by name or number: this process's own, whatever the environment.
    // SAFETY: getuid cannot fail and touches no memory.
    let user = unsafe { libc::getuid() }.to_string();
    let out = Command::new("loginctl")
        .args(["show-user", &user, "-p", "IdleHint", "-p", "IdleSinceHint"])
        .output()
        .map_err(|e| format!("loginctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "logind knows no session of {user} ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    logind_idle_ms(&String::from_utf8_lossy(&out.stdout), now_ms)
        .ok_or_else(|| "loginctl gives no idle hint".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ioreg -c IOHIDSystem` on a Mac mini (Macmini8,1, May 2026), verbatim from the terminal
    /// log in the public repository MuraDaco/mpfw_code, commit 8508e140c7e4f31fba055b3d66241baad1f168b1,
    /// `help/console_20260522_syncro_cmd.txt` lines 9914–9927.
    const IOREG: &str = r#"    | +-o IOHIDResource  <class IOHIDResource, id 0x1000004bf, registered, matched, active, busy 0 (0 ms), retain 5>
    | +-o IOHIDSystem  <class IOHIDSystem, id 0x1000004c0, registered, matched, active, busy 0 (7 ms), retain 15>
    | | | {
    | | |   "IOClass" = "IOHIDSystem"
    | | |   "HIDScrollCountMaxTimeDeltaBetween" = 600
    | | |   "IOPersonalityPublisher" = "com.apple.iokit.IOHIDFamily"
    | | |   "IOResourceMatch" = "IOBSD"
    | | |   "IOMatchedAtBoot" = Yes
    | | |   "HIDServiceGlobalModifiersUsage" = 1
    | | |   "IOProviderClass" = "IOResources"
    | | |   "IOReportLegendPublic" = Yes
    | | |   "IOProbeScore" = 0
    | | |   "HIDIdleTime" = 40165394
    | | |   "HIDScrollCountIgnoreMomentumScrolls" = Yes
"#;

    /// `ioreg -c IOHIDSystem | grep HIDIdleTime`, the same log, lines 10131–10132.
    const IOREG_GREP: &str = "    | | |   \"HIDIdleTime\" = 33128327\n";

    /// `loginctl show-session c1` in a Cinnamon session (2019), verbatim from the public
    /// repository heterotopian/technotes, commit 8c662dfaf5632b7f9d607a30f42b168332e34c4f,
    /// `source/systemd/controller/loginctl.rst` (its literal block's 4-space indent removed).
    const LOGINCTL: &str = "Id=c1
Timestamp=Sun 2019-11-17 18:34:11 EST
TimestampMonotonic=66150378
DefaultControlGroup=systemd:/user/1000.user/c1.session
VTNr=8
Display=:0
Remote=no
Service=mdm
Leader=1639
Audit=0
Type=x11
Class=user
Active=yes
State=active
KillProcesses=no
IdleHint=no
IdleSinceHint=0
IdleSinceHintMonotonic=0
Name=chris
";

    #[test]
    fn hid_idle_time_is_read_from_ioregs_real_output_in_milliseconds() {
        // 40,165,394 ns: 40 ms since the last event (someone is typing the command).
        assert_eq!(ioreg_idle_ms(IOREG), Some(40));
        assert_eq!(ioreg_idle_ms(IOREG_GREP), Some(33));
        assert_eq!(ioreg_idle_ms("\"IOClass\" = \"IOHIDSystem\"\n"), None);
        assert!(active(40, 300_000));
    }

    #[test]
    fn loginds_idle_hint_is_read_from_loginctls_real_output() {
        assert_eq!(
            logind_idle_ms(LOGINCTL, 1_800_000_000_000),
            Some(0),
            "not idle"
        );
        // No public show-session output with the hint set was found: this is the one above with
        // its two values as logind sets them when idle, the time taken from a real
        // PropertiesChanged signal of logind (dbus-monitor, in go-hass-agent's pull request
        // #85: IdleHint true, IdleSinceHint 1705872369067393 µs), read 10 minutes later.
        let away = LOGINCTL
            .replace("IdleHint=no", "IdleHint=yes")
            .replace("IdleSinceHint=0", "IdleSinceHint=1705872369067393");
        assert_eq!(
            logind_idle_ms(&away, 1_705_872_369_067 + 600_000),
            Some(600_000)
        );
        assert!(!active(600_000, 300_000));
        assert_eq!(logind_idle_ms("Id=c1\nName=chris\n", 1), None);
    }
}
