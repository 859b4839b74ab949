//! The systemd user unit (Linux): the same behaviour as the launchd agent — start at login (or
//! boot with lingering), restart after a failure but not after a clean exit, a long stop timeout
//! for the shutdown checkpoint.

use std::path::{Path, PathBuf};

use super::{run, ServiceError, ServiceSpec};

/// A value for a unit file: no control characters (a newline would end the line and start
/// another setting), and `%` doubled (systemd expands `%h`, `%u`… specifiers everywhere).
fn unit_text(what: &str, value: &str) -> Result<String, ServiceError> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(ServiceError::Render(format!(
            "{what} contains the control character {c:?}: {value:?}"
        )));
    }
    Ok(value.replace('%', "%%"))
}

/// Quote an argument for `ExecStart` or `Environment=` (systemd splits on spaces and honours
/// quotes with backslash escapes); in `ExecStart`, `$` is doubled too (it expands variables).
fn quote(what: &str, arg: &str, exec: bool) -> Result<String, ServiceError> {
    let mut v = unit_text(what, arg)?;
    if exec {
        v = v.replace('$', "$$");
    }
    Ok(
        if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || "\"\\'".contains(c)) {
            v
        } else {
            format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
        },
    )
}

/// The unit file's text. Refused (with what and why) when a path or flag holds a control
/// character.
pub fn render(spec: &ServiceSpec) -> Result<String, ServiceError> {
    let mut exec = vec![quote(
        "the program path",
        &spec.program.display().to_string(),
        true,
    )?];
    for a in &spec.args {
        exec.push(quote("a worker flag", a, true)?);
    }
    let nice = match spec.process_type {
        super::ProcessType::Background => "Nice=10\n",
        _ => "",
    };
    Ok(format!(
        "[Unit]\n\
         Description=qwen3q worker: batch LLM processing of a durable document queue\n\
         After=default.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exec}\n\
         Environment={home}\n\
         Environment={path}\n\
         Restart=on-failure\n\
         RestartSec={throttle}\n\
         TimeoutStopSec={stop}\n\
         KillSignal=SIGTERM\n\
         {nice}\
         StandardOutput=append:{out}\n\
         StandardError=append:{err}\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        exec = exec.join(" "),
        home = quote(
            "the home path",
            &format!("QWEN3Q_HOME={}", spec.home.display()),
            false
        )?,
        path = quote("PATH", &format!("PATH={}", spec.path_env), false)?,
        throttle = spec.throttle_secs,
        stop = spec.exit_timeout_secs,
        out = unit_text("the log path", &spec.stdout.display().to_string())?,
        err = unit_text("the log path", &spec.stderr.display().to_string())?,
    ))
}

/// Where the unit goes: `~/.config/systemd/user/<label>.service`.
pub fn unit_path(user_home: &Path, label: &str) -> PathBuf {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| user_home.join(".config"));
    config.join("systemd/user").join(format!("{label}.service"))
}

/// Whether `systemctl --user` can reach a user manager here.
pub fn available() -> Result<(), ServiceError> {
    match run("systemctl", &["--user", "show-environment"]) {
        Ok(_) => Ok(()),
        Err(e) => Err(ServiceError::Unavailable(format!(
            "systemctl --user is not available here ({e}); run `qwen3q worker` under another supervisor, or log in to a session with a systemd user manager"
        ))),
    }
}

pub fn install(spec: &ServiceSpec, path: &Path) -> Result<(), ServiceError> {
    available()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ServiceError::Write(dir.to_path_buf(), e))?;
    }
    std::fs::write(path, render(spec)?).map_err(|e| ServiceError::Write(path.to_path_buf(), e))?;
    let unit = format!("{}.service", spec.label);
    run("systemctl", &["--user", "daemon-reload"])?;
    run("systemctl", &["--user", "enable", "--now", &unit])?;
    Ok(())
}

pub fn uninstall(label: &str, path: &Path) -> Result<bool, ServiceError> {
    available()?;
    let unit = format!("{label}.service");
    let existed = path.exists();
    let _ = run("systemctl", &["--user", "disable", "--now", &unit]);
    if existed {
        std::fs::remove_file(path).map_err(|e| ServiceError::Write(path.to_path_buf(), e))?;
    }
    run("systemctl", &["--user", "daemon-reload"])?;
    Ok(existed)
}

/// `systemctl --user status` (its exit code says "inactive" too: the text is the answer).
pub fn status(label: &str) -> Result<String, ServiceError> {
    available()?;
    let unit = format!("{label}.service");
    match run("systemctl", &["--user", "status", "--no-pager", &unit]) {
        Ok(s) => Ok(s),
        Err(ServiceError::Command { output, .. }) => Ok(output),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ProcessType;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            label: "qwen3q".into(),
            program: "/usr/local/bin/qwen3q".into(),
            args: vec!["worker".into(), "--window".into(), "0 22 * * *".into()],
            home: "/home/me/.local/share/qwen3q".into(),
            path_env: "/usr/local/bin:/usr/bin:/bin".into(),
            stdout: "/home/me/.local/share/qwen3q/logs/service.out.log".into(),
            stderr: "/home/me/.local/share/qwen3q/logs/service.err.log".into(),
            process_type: ProcessType::Background,
            throttle_secs: 30,
            exit_timeout_secs: 120,
            user: None,
        }
    }

    #[test]
    fn every_key_of_the_unit() {
        let u = render(&spec()).unwrap();
        for line in [
            "[Unit]",
            "After=default.target",
            "[Service]",
            "Type=simple",
            "ExecStart=/usr/local/bin/qwen3q worker --window \"0 22 * * *\"",
            "Environment=QWEN3Q_HOME=/home/me/.local/share/qwen3q",
            "Environment=PATH=/usr/local/bin:/usr/bin:/bin",
            "Restart=on-failure",
            "RestartSec=30",
            "TimeoutStopSec=120",
            "KillSignal=SIGTERM",
            "Nice=10",
            "StandardOutput=append:/home/me/.local/share/qwen3q/logs/service.out.log",
            "StandardError=append:/home/me/.local/share/qwen3q/logs/service.err.log",
            "[Install]",
            "WantedBy=default.target",
        ] {
            assert!(u.lines().any(|l| l == line), "missing {line:?} in\n{u}");
        }
        let standard = ServiceSpec {
            process_type: ProcessType::Standard,
            ..spec()
        };
        assert!(!render(&standard).unwrap().contains("Nice="));
    }

    #[test]
    fn hostile_values_are_escaped_or_refused() {
        let odd = ServiceSpec {
            program: "/opt/q 100%/qwen3q".into(),
            args: vec![
                "worker".into(),
                "--window".into(),
                "0 22 * * *".into(),
                "--name=$HOME%h\"x\\y".into(),
            ],
            home: "/home/me/50%/q3".into(),
            ..spec()
        };
        let u = render(&odd).unwrap();
        let exec = u.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
        assert_eq!(
            exec,
            "ExecStart=\"/opt/q 100%%/qwen3q\" worker --window \"0 22 * * *\" \"--name=$$HOME%%h\\\"x\\\\y\""
        );
        assert!(
            u.lines()
                .any(|l| l == "Environment=QWEN3Q_HOME=/home/me/50%%/q3"),
            "{u}"
        );
        for (field, bad) in [
            ("flag", "--window\nExecStartPre=/bin/rm -rf ~"),
            ("home", "/home/me\rx"),
            ("program", "/bin/qwen3q\u{7}"),
        ] {
            let mut s = spec();
            match field {
                "flag" => s.args.push(bad.into()),
                "home" => s.home = bad.into(),
                _ => s.program = bad.into(),
            }
            let e = render(&s).unwrap_err().to_string();
            assert!(e.contains("control character"), "{field}: {e}");
        }
    }

    #[test]
    fn the_unit_lives_in_the_user_config() {
        let p = unit_path(Path::new("/home/me"), "qwen3q");
        assert!(
            p.ends_with("systemd/user/qwen3q.service"),
            "{}",
            p.display()
        );
    }
}
