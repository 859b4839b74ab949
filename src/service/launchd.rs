//! The launchd job (macOS): a LaunchAgent in `~/Library/LaunchAgents` (starts at login), or with
//! `--system` a LaunchDaemon in `/Library/LaunchDaemons` with `UserName` (starts at boot, no
//! login needed). Rendered with the `plist` crate; managed with `launchctl bootstrap`,
//! `bootout`, `kickstart -k` and `print`.

use std::path::{Path, PathBuf};

use plist::{Dictionary, Value};

use super::{ServiceError, ServiceSpec};

/// The plist's XML.
pub fn render(spec: &ServiceSpec) -> Result<String, ServiceError> {
    let mut d = Dictionary::new();
    d.insert("Label".into(), Value::String(spec.label.clone()));
    let mut args = vec![Value::String(spec.program.display().to_string())];
    args.extend(spec.args.iter().map(|a| Value::String(a.clone())));
    d.insert("ProgramArguments".into(), Value::Array(args));
    d.insert("RunAtLoad".into(), Value::Boolean(true));
    let mut keep_alive = Dictionary::new();
    // Restart after a crash, not after a clean exit (`worker --drain`, a stop).
    keep_alive.insert("SuccessfulExit".into(), Value::Boolean(false));
    d.insert("KeepAlive".into(), Value::Dictionary(keep_alive));
    d.insert(
        "ThrottleInterval".into(),
        Value::Integer((spec.throttle_secs as i64).into()),
    );
    d.insert(
        "ExitTimeOut".into(),
        Value::Integer((spec.exit_timeout_secs as i64).into()),
    );
    d.insert(
        "ProcessType".into(),
        Value::String(spec.process_type.as_str().into()),
    );
    d.insert(
        "StandardOutPath".into(),
        Value::String(spec.stdout.display().to_string()),
    );
    d.insert(
        "StandardErrorPath".into(),
        Value::String(spec.stderr.display().to_string()),
    );
    let mut env = Dictionary::new();
    env.insert(
        "QWEN3Q_HOME".into(),
        Value::String(spec.home.display().to_string()),
    );
    env.insert("PATH".into(), Value::String(spec.path_env.clone()));
    d.insert("EnvironmentVariables".into(), Value::Dictionary(env));
    if let Some(user) = &spec.user {
        d.insert("UserName".into(), Value::String(user.clone()));
    }
    let mut out = Vec::new();
    Value::Dictionary(d)
        .to_writer_xml(&mut out)
        .map_err(|e| ServiceError::Render(e.to_string()))?;
    String::from_utf8(out).map_err(|e| ServiceError::Render(e.to_string()))
}

/// Where the plist goes.
pub fn plist_path(user_home: &Path, label: &str, system: bool) -> PathBuf {
    let dir = if system {
        PathBuf::from("/Library/LaunchDaemons")
    } else {
        user_home.join("Library/LaunchAgents")
    };
    dir.join(format!("{label}.plist"))
}

/// launchctl's domain: `gui/<uid>` for an agent, `system` for a daemon.
pub fn domain(system: bool, uid: u32) -> String {
    if system {
        "system".into()
    } else {
        format!("gui/{uid}")
    }
}

#[cfg(target_os = "macos")]
pub mod manage {
    use std::path::Path;

    use super::super::{run, ServiceError, ServiceSpec};
    use super::{domain, render};

    fn uid() -> u32 {
        // SAFETY: getuid has no preconditions.
        unsafe { libc::getuid() }
    }

    pub fn install(spec: &ServiceSpec, path: &Path) -> Result<(), ServiceError> {
        let system = spec.user.is_some();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ServiceError::Write(dir.to_path_buf(), e))?;
        }
        std::fs::write(path, render(spec)?)
            .map_err(|e| ServiceError::Write(path.to_path_buf(), e))?;
        let domain = domain(system, uid());
        // A job of the same label loaded before: replace it.
        let _ = run(
            "launchctl",
            &["bootout", &format!("{domain}/{}", spec.label)],
        );
        run(
            "launchctl",
            &["bootstrap", &domain, &path.display().to_string()],
        )?;
        run(
            "launchctl",
            &["kickstart", "-k", &format!("{domain}/{}", spec.label)],
        )?;
        Ok(())
    }

    pub fn uninstall(label: &str, path: &Path, system: bool) -> Result<bool, ServiceError> {
        let domain = domain(system, uid());
        let _ = run("launchctl", &["bootout", &format!("{domain}/{label}")]);
        let existed = path.exists();
        if existed {
            std::fs::remove_file(path).map_err(|e| ServiceError::Write(path.to_path_buf(), e))?;
        }
        Ok(existed)
    }

    pub fn status(label: &str, system: bool) -> Result<String, ServiceError> {
        let domain = domain(system, uid());
        run("launchctl", &["print", &format!("{domain}/{label}")])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ProcessType;

    fn spec(user: Option<&str>) -> ServiceSpec {
        ServiceSpec {
            label: "io.qwen3q.worker".into(),
            program: "/opt/homebrew/bin/qwen3q".into(),
            args: vec!["worker".into()],
            home: "/Users/me/Library/Application Support/qwen3q".into(),
            path_env: "/opt/homebrew/bin:/usr/bin:/bin".into(),
            stdout: "/Users/me/Library/Application Support/qwen3q/logs/service.out.log".into(),
            stderr: "/Users/me/Library/Application Support/qwen3q/logs/service.err.log".into(),
            process_type: ProcessType::Standard,
            throttle_secs: 30,
            exit_timeout_secs: 120,
            user: user.map(str::to_string),
        }
    }

    #[test]
    fn every_key_of_the_plist() {
        let xml = render(&spec(None)).unwrap();
        let v: Value = plist::from_bytes(xml.as_bytes()).unwrap();
        let d = v.as_dictionary().unwrap();
        assert_eq!(d["Label"].as_string(), Some("io.qwen3q.worker"));
        let args: Vec<&str> = d["ProgramArguments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_string().unwrap())
            .collect();
        assert_eq!(args, ["/opt/homebrew/bin/qwen3q", "worker"]);
        assert_eq!(d["RunAtLoad"].as_boolean(), Some(true));
        let ka = d["KeepAlive"].as_dictionary().unwrap();
        assert_eq!(ka["SuccessfulExit"].as_boolean(), Some(false));
        assert_eq!(d["ThrottleInterval"].as_signed_integer(), Some(30));
        assert_eq!(d["ExitTimeOut"].as_signed_integer(), Some(120));
        assert_eq!(d["ProcessType"].as_string(), Some("Standard"));
        assert!(d["StandardOutPath"]
            .as_string()
            .unwrap()
            .ends_with("service.out.log"));
        assert!(d["StandardErrorPath"]
            .as_string()
            .unwrap()
            .ends_with("service.err.log"));
        let env = d["EnvironmentVariables"].as_dictionary().unwrap();
        assert_eq!(
            env["QWEN3Q_HOME"].as_string(),
            Some("/Users/me/Library/Application Support/qwen3q")
        );
        assert_eq!(
            env["PATH"].as_string(),
            Some("/opt/homebrew/bin:/usr/bin:/bin")
        );
        assert!(
            !d.contains_key("UserName"),
            "an agent runs as the logged-in user"
        );
        // Absolute paths only: launchd expands neither ~ nor $HOME.
        assert!(!xml.contains('~') && !xml.contains("$HOME"));
    }

    #[test]
    fn a_system_daemon_names_its_user_and_lives_in_library() {
        let xml = render(&spec(Some("me"))).unwrap();
        let v: Value = plist::from_bytes(xml.as_bytes()).unwrap();
        assert_eq!(
            v.as_dictionary().unwrap()["UserName"].as_string(),
            Some("me")
        );
        assert_eq!(
            plist_path(Path::new("/Users/me"), "io.qwen3q.worker", true),
            Path::new("/Library/LaunchDaemons/io.qwen3q.worker.plist")
        );
        assert_eq!(
            plist_path(Path::new("/Users/me"), "io.qwen3q.worker", false),
            Path::new("/Users/me/Library/LaunchAgents/io.qwen3q.worker.plist")
        );
        assert_eq!(domain(false, 501), "gui/501");
        assert_eq!(domain(true, 0), "system");
    }

    #[test]
    fn background_is_a_process_type() {
        let bg = ServiceSpec {
            process_type: ProcessType::Background,
            ..spec(None)
        };
        assert!(render(&bg).unwrap().contains("<string>Background</string>"));
    }
}
