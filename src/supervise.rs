//! The worker as two processes: a small supervisor, and the runner it starts, which owns the
//! store and runs inference. The supervisor learns how the runner died from its exit status —
//! the one reliable witness of a death a process inflicts on itself (an abort in llama.cpp, a
//! stack overflow, a segfault in native code), which no code inside the dying process can be
//! trusted to report. After such a crash it charges the jobs in flight ([`crate::crash`]) and
//! starts the runner again; after an outside kill (SIGKILL: `kill -9`, the OOM killer) it
//! charges nobody. launchd and systemd see one long-lived process either way.
//!
//! Chosen over a fatal-signal handler on an alternate stack: the handler would run inside a
//! process whose heap or stack may be what broke, may only use async-signal-safe calls, and
//! cannot see a death by SIGKILL at all; the exit status is exact, and the supervisor is
//! ordinary code. The price is one more small process (a few MB).
//!
//! Signals: SIGTERM, SIGINT and SIGHUP to the supervisor are passed to the runner as SIGTERM (a
//! second one stops it at once, as before); the runner has its own process group, so a
//! terminal's Ctrl-C reaches it only through the supervisor. The runner dies with the
//! supervisor (Linux: the parent-death signal; elsewhere a thread watching its parent).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Set in the runner's environment: the supervisor's pid. Its presence makes `qwen3q worker`
/// the runner.
pub const RUNNER_OF: &str = "QWEN3Q_RUNNER_OF";

/// The supervisor's pid, when this process is a runner.
pub fn supervisor_pid() -> Option<u32> {
    std::env::var(RUNNER_OF).ok()?.parse().ok()
}

/// How the runner ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Death {
    /// It exited with this code (done, drained, stopped, or an error it reported).
    Exited(i32),
    /// A signal killed it.
    Signal(i32),
}

/// The runner's pid while it runs (0 otherwise), for the signal handler.
static RUNNER: AtomicI32 = AtomicI32::new(0);
/// A stop was asked of the supervisor.
static STOPPING: AtomicBool = AtomicBool::new(false);

extern "C" fn pass_on(_: libc::c_int) {
    STOPPING.store(true, Ordering::SeqCst);
    let pid = RUNNER.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Pass SIGTERM, SIGINT and SIGHUP on to the runner.
pub fn pass_signals_on() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: a plain handler that only touches atomics and calls kill.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = pass_on as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Whether a stop was asked of the supervisor.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Start the runner (`program` — the binary that decodes — with these arguments and
/// environment, in its own process group) and wait for its end.
pub fn run_once(
    program: &std::path::Path,
    args: &[std::ffi::OsString],
    env: &[(&str, &str)],
) -> std::io::Result<(u32, Death)> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut child = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .env(RUNNER_OF, std::process::id().to_string())
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    RUNNER.store(pid as i32, Ordering::SeqCst);
    if stopping() {
        // A stop that came while it started.
        // SAFETY: kill has no preconditions.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
    let status = child.wait();
    RUNNER.store(0, Ordering::SeqCst);
    let status = status?;
    let death = match (status.code(), status.signal()) {
        (Some(code), _) => Death::Exited(code),
        (None, Some(sig)) => Death::Signal(sig),
        (None, None) => Death::Exited(1),
    };
    Ok((pid, death))
}

/// In the runner: die with the supervisor `parent`, however it ends (a `kill -9` of it too),
/// and let SIGSEGV and SIGBUS take their default action. Rust's own handler for them (which
/// names a stack overflow before aborting) lets a signal that came without a faulting
/// instruction pass unnoticed once; with the default action every such death reaches the
/// supervisor as what it is (a stack overflow then ends as a SIGSEGV, still charged).
pub fn become_runner(parent: u32) {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: restoring a signal's default disposition has no preconditions.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    platform::die_with(parent);
}

/// The name of a signal, for people.
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGHUP => "SIGHUP".into(),
        s => crate::crash::self_inflicted(s).map_or_else(|| format!("signal {s}"), str::to_string),
    }
}

#[cfg(target_os = "linux")]
mod platform {
    pub fn die_with(parent: u32) {
        // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number has no other effect.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        // The supervisor may have died before the call: then it is too late for the signal.
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } as u32 != parent {
            std::process::exit(137);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    /// No parent-death signal on macOS: a thread notices when the process is reparented.
    pub fn die_with(parent: u32) {
        let watch = move || loop {
            // SAFETY: getppid has no preconditions.
            if unsafe { libc::getppid() } as u32 != parent {
                // As abrupt as a kill: the next worker resumes after the last checkpoint.
                // SAFETY: _exit ends the process at once.
                unsafe { libc::_exit(137) };
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        };
        let _ = std::thread::Builder::new()
            .name("qwen3q-parent-watch".into())
            .spawn(watch);
    }
}

/// The runner's word to its supervisor that interactive chats were decoding when it died: a
/// chat is no stored job, so the store cannot say so, and without it a crash that a chat
/// caused beside one batch job would be charged to that job as if it had crashed alone
/// ([`crate::crash`]). The word is a file's presence (`<home>/chats-decoding`): made before a
/// chat's first decode, removed after the last chat ended — each one system call, so no crash
/// can fall between a chat's start and its witness, and no flush is needed (a process's death
/// leaves the file system as it was; a power loss ends the supervisor too).
#[derive(Debug)]
pub struct ChatWitness {
    /// `None`: no supervisor to tell (a worker that is not a runner, the tests).
    path: Option<PathBuf>,
    /// Whether the file is there, as this runner made it.
    on: bool,
}

impl ChatWitness {
    pub fn none() -> ChatWitness {
        ChatWitness {
            path: None,
            on: false,
        }
    }

    pub fn at(path: PathBuf) -> ChatWitness {
        ChatWitness {
            path: Some(path),
            on: false,
        }
    }

    /// Chats decode now, or none does: the file is made or removed when that changes.
    pub fn decoding(&mut self, on: bool) {
        if on == self.on {
            return;
        }
        self.on = on;
        let Some(path) = &self.path else { return };
        let done = if on {
            std::fs::File::create(path).map(drop)
        } else {
            std::fs::remove_file(path)
        };
        if let Err(e) = done {
            tracing::warn!(path = %path.display(), "the chats' crash witness: {e}");
        }
    }

    /// The supervisor's side: whether the runner left the file (it died while chats decoded),
    /// which is removed either way, so that the next runner starts with none.
    pub fn take(path: &Path) -> bool {
        std::fs::remove_file(path).is_ok()
    }
}
