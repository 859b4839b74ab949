//! Running the worker as a managed service: a launchd LaunchAgent (or LaunchDaemon) on macOS, a
//! systemd user unit on Linux. Rendering is pure and unit-tested on every platform; installing
//! calls `launchctl` or `systemctl --user`.

pub mod launchd;
pub mod power;
pub mod presence;
pub mod systemd;

use std::path::PathBuf;

/// launchd's `ProcessType`: how the system schedules the worker. `Background` confines it to
/// the efficiency cores on Apple Silicon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProcessType {
    Standard,
    Background,
    Adaptive,
    Interactive,
}

impl ProcessType {
    pub fn parse(s: &str) -> Option<ProcessType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "standard" => ProcessType::Standard,
            "background" => ProcessType::Background,
            "adaptive" => ProcessType::Adaptive,
            "interactive" => ProcessType::Interactive,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProcessType::Standard => "Standard",
            ProcessType::Background => "Background",
            ProcessType::Adaptive => "Adaptive",
            ProcessType::Interactive => "Interactive",
        }
    }
}

/// Everything a service definition needs, resolved: absolute paths only (launchd expands
/// neither `~` nor `$HOME`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// launchd label / systemd unit name stem.
    pub label: String,
    /// The qwen3q binary.
    pub program: PathBuf,
    /// Arguments after the program (`worker`, and any worker flags).
    pub args: Vec<String>,
    /// QWEN3Q_HOME for the service.
    pub home: PathBuf,
    /// PATH for the service (launchd starts with a minimal one).
    pub path_env: String,
    /// Where stdout and stderr go.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub process_type: ProcessType,
    /// Least seconds between restarts.
    pub throttle_secs: u32,
    /// Seconds the service has to stop after SIGTERM: long enough for the shutdown checkpoint.
    pub exit_timeout_secs: u32,
    /// A system-wide service (LaunchDaemon) running as this user; `None`: a per-user agent.
    pub user: Option<String>,
}

/// What went wrong managing the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{command} failed: {output}")]
    Command { command: String, output: String },
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("the service definition does not render: {0}")]
    Render(String),
}

/// Run a management command; its stdout, or an error with what it printed.
pub fn run(program: &str, args: &[&str]) -> Result<String, ServiceError> {
    let command = format!("{program} {}", args.join(" "));
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| ServiceError::Unavailable(format!("cannot run {program}: {e}")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ServiceError::Command {
            command,
            output: text.trim().to_string(),
        })
    }
}
