//! `qwen3q service install|uninstall|status|logs`: the worker under launchd (macOS) or a
//! systemd user unit (Linux).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use super::args::ServiceCommand;
use super::{code, fail, Ctx};
use crate::service::{ProcessType, ServiceSpec};

/// The unit's name on Linux, the job's label on macOS.
#[cfg(target_os = "macos")]
const LABEL: &str = "io.qwen3q.worker";
#[cfg(not(target_os = "macos"))]
const LABEL: &str = "qwen3q";

pub fn run(ctx: &Ctx, command: ServiceCommand) -> Result<i32> {
    match command {
        ServiceCommand::Install {
            system,
            process_type,
            worker_args,
        } => install(ctx, system, &process_type, worker_args),
        ServiceCommand::Uninstall { system } => uninstall(system),
        ServiceCommand::Status { system } => status(system),
        ServiceCommand::Logs { follow, lines } => logs(ctx, follow, lines),
    }
}

fn user_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn spec(
    ctx: &Ctx,
    system: bool,
    process_type: &str,
    worker_args: Vec<String>,
) -> Result<ServiceSpec> {
    let Some(process_type) = ProcessType::parse(process_type) else {
        return fail(
            code::BAD_INPUT,
            format!(
                "--process-type {process_type:?}: standard, background, adaptive or interactive"
            ),
        );
    };
    let program = std::env::current_exe()?.canonicalize()?;
    let home = ctx
        .home
        .dir
        .canonicalize()
        .unwrap_or_else(|_| ctx.home.dir.clone());
    let logs = home.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut path_env = String::from("/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
    if cfg!(target_os = "macos") {
        path_env = format!("/opt/homebrew/bin:{path_env}");
    }
    if let Some(dir) = program.parent() {
        path_env = format!("{}:{path_env}", dir.display());
    }
    let mut args = vec!["worker".to_string()];
    args.extend(worker_args);
    // Under sudo, $USER is root: the person who asked is SUDO_USER.
    let user = if system {
        let who = std::env::var("SUDO_USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "root".into());
        Some(who)
    } else {
        None
    };
    Ok(ServiceSpec {
        label: LABEL.into(),
        program,
        args,
        home,
        path_env,
        stdout: logs.join("service.out.log"),
        stderr: logs.join("service.err.log"),
        process_type,
        throttle_secs: 30,
        // The shutdown checkpoint: a step finishes, every job is released and flushed.
        exit_timeout_secs: 120,
        user,
    })
}

#[cfg(target_os = "macos")]
fn install(ctx: &Ctx, system: bool, process_type: &str, worker_args: Vec<String>) -> Result<i32> {
    use crate::service::launchd;
    let spec = spec(ctx, system, process_type, worker_args)?;
    let path = launchd::plist_path(&user_home(), LABEL, system);
    launchd::manage::install(&spec, &path).or_else(|e| fail(code::FAILURE, e.to_string()))?;
    println!("installed {} ({}) and started it", LABEL, path.display());
    Ok(0)
}

#[cfg(not(target_os = "macos"))]
fn install(ctx: &Ctx, system: bool, process_type: &str, worker_args: Vec<String>) -> Result<i32> {
    use crate::service::systemd;
    if system {
        return fail(
            code::BAD_INPUT,
            "--system is for macOS LaunchDaemons; on Linux the user unit starts at boot once lingering is on (loginctl enable-linger)",
        );
    }
    let spec = spec(ctx, false, process_type, worker_args)?;
    let path = systemd::unit_path(&user_home(), LABEL);
    systemd::install(&spec, &path).or_else(|e| fail(code::FAILURE, e.to_string()))?;
    println!(
        "installed {LABEL}.service ({}) and started it",
        path.display()
    );
    Ok(0)
}

#[cfg(target_os = "macos")]
fn uninstall(system: bool) -> Result<i32> {
    use crate::service::launchd;
    let path = launchd::plist_path(&user_home(), LABEL, system);
    match launchd::manage::uninstall(LABEL, &path, system) {
        Ok(true) => println!("uninstalled {LABEL}"),
        Ok(false) => println!("{LABEL} was not installed"),
        Err(e) => return fail(code::FAILURE, e.to_string()),
    }
    Ok(0)
}

#[cfg(not(target_os = "macos"))]
fn uninstall(_system: bool) -> Result<i32> {
    use crate::service::systemd;
    let path = systemd::unit_path(&user_home(), LABEL);
    match systemd::uninstall(LABEL, &path) {
        Ok(true) => println!("uninstalled {LABEL}.service"),
        Ok(false) => println!("{LABEL}.service was not installed"),
        Err(e) => return fail(code::FAILURE, e.to_string()),
    }
    Ok(0)
}

#[cfg(target_os = "macos")]
fn status(system: bool) -> Result<i32> {
    match crate::service::launchd::manage::status(LABEL, system) {
        Ok(text) => print!("{text}"),
        Err(e) => return fail(code::NOT_FOUND, format!("{LABEL} is not loaded: {e}")),
    }
    Ok(0)
}

#[cfg(not(target_os = "macos"))]
fn status(_system: bool) -> Result<i32> {
    match crate::service::systemd::status(LABEL) {
        Ok(text) => print!("{text}"),
        Err(e) => return fail(code::FAILURE, e.to_string()),
    }
    Ok(0)
}

/// The newest worker log file in `dir` (daily files `worker.YYYY-MM-DD.log`).
fn newest_log(dir: &Path) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("worker.") && n.ends_with(".log"))
        })
        .collect();
    files.sort();
    files.pop()
}

/// The last `lines` lines of the newest log; with `follow`, then everything written to it (and
/// to the next day's file) until interrupted.
fn logs(ctx: &Ctx, follow: bool, lines: usize) -> Result<i32> {
    let dir = ctx.home.logs();
    let Some(mut path) = newest_log(&dir) else {
        return fail(
            code::NOT_FOUND,
            format!("no worker logs in {}", dir.display()),
        );
    };
    let text = std::fs::read_to_string(&path)?;
    let all: Vec<&str> = text.lines().collect();
    for l in &all[all.len().saturating_sub(lines)..] {
        println!("{l}");
    }
    if !follow {
        return Ok(0);
    }
    let mut pos = text.len() as u64;
    let mut out = std::io::stdout();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let mut f = std::fs::File::open(&path)?;
        let len = f.metadata()?.len();
        if len < pos {
            pos = 0; // truncated
        }
        if len > pos {
            f.seek(SeekFrom::Start(pos))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            out.write_all(&buf)?;
            out.flush()?;
            pos = len;
        }
        if let Some(next) = newest_log(&dir).filter(|n| *n != path) {
            path = next; // a new day's file
            pos = 0;
        }
    }
}
