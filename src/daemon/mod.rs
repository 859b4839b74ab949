//! The worker process, wired together: take the store (the last batch's model loading meanwhile:
//! `warm`), serve the socket, run the loop, stop cleanly. Wiring only: the logic lives in
//! `scheduler`, `handler` and `queue`.

pub mod warm;

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::client::connect_worker;
use crate::engine::Engine;
use crate::handler::{handle, WorkerHooks};
use crate::home::{Home, HomeError};
use crate::protocol::{Envelope, Response, MAX_REQUEST_BYTES, PROTOCOL_VERSION};
use crate::queue::{OpenOptions, Queue, StoreError};
use crate::scheduler::RunSettings;
use crate::scheduler::{Exit, LiveStatus, Signals, Worker};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another worker is already running (its socket {0} answers)")]
    AlreadyRunning(String),
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the worker loop crashed")]
    Crashed,
}

/// What the worker is asked to do.
pub struct WorkerOptions {
    pub settings: RunSettings,
    pub drain: bool,
    pub store: OpenOptions,
    /// How memory is split and when pressure is a warning or critical.
    pub budget: crate::scheduler::admission::Budget,
    /// The memory history: the sampler's own probe (none: no history), and its timing.
    pub history_probe: Option<Box<dyn crate::monitor::MemoryProbe>>,
    pub history: HistorySettings,
    /// The HTTP API, when asked for (`--http`).
    pub http: Option<crate::http::ApiSettings>,
}

/// How the memory history is kept.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// A sample this often.
    pub every: Duration,
    /// Full resolution this long, then one-minute averages…
    pub full: Duration,
    /// …kept this long.
    pub keep: Duration,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            every: Duration::from_secs(1),
            full: Duration::from_secs(24 * 3600),
            keep: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Every `every`, one memory sample into the store; every minute, the retention pass. Stops
/// with the shutdown. Samples are flushed every ten (losing a few seconds of history in a
/// crash costs nothing).
async fn sample_memory(
    store: Arc<dyn Queue>,
    status: Arc<Mutex<LiveStatus>>,
    mut probe: Box<dyn crate::monitor::MemoryProbe>,
    budget: crate::scheduler::admission::Budget,
    history: HistorySettings,
    shutdown: crate::scheduler::Shutdown,
) {
    use crate::monitor::history::Sample;
    let mut tick = tokio::time::interval(history.every);
    let mut last: Option<(std::time::Instant, u64)> = None;
    let (mut depth, mut depth_read): (u64, Option<std::time::Instant>) = (0, None);
    let mut compacted: Option<std::time::Instant> = None;
    let mut count = 0u64;
    let mut last_at: Option<crate::job::Millis> = None;
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick.tick() => {}
        }
        let now = crate::now_ms();
        let snap = probe.sample(now);
        let (batch, models, generated, waiting_for, sheds) = {
            let st = status.lock().unwrap();
            let models = st
                .models
                .iter()
                .map(|m| (m.name.clone(), m.bytes))
                .collect();
            let waiting_for = st.memory_wait.as_ref().map(|w| w.model.clone());
            // Sheds since the previous sample (the status keeps the last 20 with their times).
            let since = last_at.unwrap_or(now);
            let sheds = st
                .sheds
                .iter()
                .filter(|(at, _)| *at > since && *at <= now)
                .count() as u32;
            (st.parallel, models, st.generated_tokens, waiting_for, sheds)
        };
        last_at = Some(now);
        let tokens_per_sec = match last {
            Some((at, before)) => {
                generated.saturating_sub(before) as f64 / at.elapsed().as_secs_f64().max(1e-3)
            }
            None => 0.0,
        };
        last = Some((std::time::Instant::now(), generated));
        if depth_read.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            depth = store.counts().map_or(depth, |c| c.queued);
            depth_read = Some(std::time::Instant::now());
        }
        let device_free = snap
            .devices
            .iter()
            .find(|d| !d.name.contains("CPU"))
            .or(snap.devices.first())
            .map(|d| d.free);
        let sample = Sample {
            at: now,
            total: snap.effective_total(),
            available: snap.effective_available(),
            used_percent: snap.used_percent(),
            pressure: crate::scheduler::admission::pressure(&snap, &budget),
            process_rss: snap.process_rss,
            device_free,
            models,
            batch,
            tokens_per_sec,
            queue_depth: depth,
            waiting_for,
            sheds,
        };
        if let Err(e) = store.record_sample(&sample) {
            tracing::warn!("memory history: {e}");
            continue;
        }
        count += 1;
        if count % 10 == 0 {
            let _ = store.flush();
        }
        if compacted.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            compacted = Some(std::time::Instant::now());
            let full = history.full.as_millis() as u64;
            let keep = history.keep.as_millis() as u64;
            if let Err(e) = store.compact_history(now, full, keep) {
                tracing::warn!("memory history retention: {e}");
            }
        }
    }
}

/// Run a worker until `signals` says stop (or, with `drain`, until nothing is ready).
/// `engine` is made by the caller: the real llama.cpp one, or a fake in tests.
pub fn run(
    home: &Home,
    mut engine: Box<dyn Engine>,
    mut probe: Box<dyn crate::monitor::MemoryProbe>,
    options: WorkerOptions,
    signals: Signals,
) -> Result<Exit, DaemonError> {
    // Before the store opens: "up", and the first token's delay, count from here.
    let started = crate::now_ms();
    home.ensure()?;
    let socket = home.socket();
    let already = || DaemonError::AlreadyRunning(socket.display().to_string());
    if connect_worker(&socket).is_some() {
        return Err(already());
    }
    // The model the last batch decoded with loads while the store opens (`warm`).
    let hint = warm::plan(home, &*engine, &mut *probe, &options.budget);
    let opened = warm::alongside(hint, &mut *engine, || {
        crate::queue::open(&home.store(), &options.store)
    });
    // The store's lock decides between two workers starting at once; the loser then finds
    // the winner's socket (or a command holding the store briefly).
    let store = match opened {
        Ok(s) => s,
        Err(StoreError::Locked(p)) => {
            std::thread::sleep(Duration::from_millis(500));
            return Err(if connect_worker(&socket).is_some() {
                already()
            } else {
                StoreError::Locked(p).into()
            });
        }
        Err(e) => return Err(e.into()),
    };
    // Opening the store builds its page table through many short-lived allocations: give
    // the freed heap back (at 100,000 jobs: measured in BENCHMARKS.md "Worker RSS").
    crate::engine::release::trim_heap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    // A socket file left by a dead worker: nobody answered above, so remove it.
    let _ = std::fs::remove_file(&socket);
    let listener = {
        let _guard = runtime.enter();
        UnixListener::bind(&socket)
            .map_err(|e| DaemonError::Listen(socket.display().to_string(), e))?
    };
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| DaemonError::Listen(socket.display().to_string(), e))?;

    let status = Arc::new(Mutex::new(LiveStatus {
        // The pid a person stops: the supervisor's, when this process is its runner.
        pid: crate::supervise::supervisor_pid().unwrap_or_else(std::process::id),
        runner_pid: std::process::id(),
        started,
        ..Default::default()
    }));
    let hooks = WorkerHooks {
        signals: signals.clone(),
        status: status.clone(),
    };
    if let Some(api) = options.http {
        let listener = {
            let _guard = runtime.enter();
            let std_listener = std::net::TcpListener::bind(api.addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| DaemonError::Listen(api.addr.to_string(), e))?;
            tokio::net::TcpListener::from_std(std_listener)
                .map_err(|e| DaemonError::Listen(api.addr.to_string(), e))?
        };
        if !crate::http::is_loopback(&api.addr) {
            tracing::warn!(addr = %api.addr, "the HTTP API listens beyond this machine, without TLS: put a reverse proxy with TLS in front, or use an SSH tunnel");
            eprintln!("qwen3q: warning: the HTTP API on {} is reachable from other machines, unencrypted (README: a reverse proxy or an SSH tunnel)", api.addr);
        }
        tracing::info!(addr = %api.addr, "HTTP API listening");
        let state = std::sync::Arc::new(crate::http::ApiState {
            store: store.clone(),
            hooks: hooks.clone(),
            key: api.key,
            resolve_model: api.resolve_model,
            max_attempts: api.max_attempts,
            chat_max_tokens: api.chat_max_tokens,
        });
        let shutdown = signals.shutdown.clone();
        runtime.spawn(crate::http::serve(listener, state, async move {
            shutdown.wait().await
        }));
    }
    runtime.spawn(serve(listener, store.clone(), hooks));
    if let Some(probe) = options.history_probe {
        runtime.spawn(sample_memory(
            store.clone(),
            status.clone(),
            probe,
            options.budget.clone(),
            options.history.clone(),
            signals.shutdown.clone(),
        ));
    }
    runtime.spawn(stop_on_signals(signals.clone()));
    runtime.spawn(warm::keep_hint(
        home.clone(),
        status.clone(),
        signals.shutdown.clone(),
    ));

    let worker = Worker {
        store: store.clone(),
        engine,
        probe,
        budget: options.budget,
        settings: options.settings,
        drain: options.drain,
        signals: signals.clone(),
        status,
        now: crate::now_ms,
        chat_witness: match crate::supervise::supervisor_pid() {
            Some(_) => crate::supervise::ChatWitness::at(home.chats_decoding()),
            None => crate::supervise::ChatWitness::none(),
        },
    };
    let looped = std::thread::Builder::new()
        .name("qwen3q-worker".into())
        .spawn(move || worker.run())
        .map_err(DaemonError::Runtime)?
        .join();
    // Stop serving first, so no request sees a store that is going away.
    signals.stop();
    let _ = std::fs::remove_file(&socket);
    runtime.shutdown_timeout(Duration::from_secs(2));
    store.flush()?;
    // The next `status` with no worker reads the store's card instead of opening it.
    crate::client::close_with_card(home, store);
    match looped {
        Ok(result) => Ok(result?),
        Err(_) => Err(DaemonError::Crashed),
    }
}

/// SIGTERM and SIGINT: stop claiming, checkpoint, release, exit 0. A second signal while
/// stopping exits at once (as a crash would: only the chunk in progress is lost).
async fn stop_on_signals(signals: Signals) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
        _ = signals.shutdown.wait() => return,
    }
    signals.stop();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting now; the chunk in progress will run again");
    std::process::exit(130);
}

/// Accept connections until shutdown. Each connection is served on its own task.
async fn serve(listener: UnixListener, store: Arc<dyn Queue>, hooks: WorkerHooks) {
    let shutdown = hooks.signals.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, store.clone(), hooks.clone()));
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.wait() => return,
        }
    }
}

fn peer_is_us(stream: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    stream.peer_cred().map(|c| c.uid() == me).unwrap_or(false)
}

async fn connection(stream: UnixStream, store: Arc<dyn Queue>, hooks: WorkerHooks) {
    if !peer_is_us(&stream) {
        tracing::warn!("refused a connection from another user");
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let shutdown = hooks.signals.shutdown.clone();
    loop {
        let mut frame = Vec::new();
        let read = tokio::select! {
            r = read_frame(&mut reader, &mut frame) => r,
            _ = shutdown.wait() => return,
        };
        match read {
            Ok(Frame::Line) => {}
            Ok(Frame::End) | Err(_) => return,
            Ok(Frame::TooLong) => {
                tracing::warn!("refused a request over {} MiB", MAX_REQUEST_BYTES >> 20);
                let answer = Response::Error(format!(
                    "the request is over {} MiB; the connection is closed",
                    MAX_REQUEST_BYTES >> 20
                ));
                if let Ok(mut out) = serde_json::to_string(&answer) {
                    out.push('\n');
                    let _ = write.write_all(out.as_bytes()).await;
                }
                return;
            }
        }
        let parsed = serde_json::from_slice::<Envelope>(&frame);
        // The frame (up to twice a large document's JSON: the buffer grows by doubling) goes
        // before the request is handled: an enqueue of a 50 MB document holds it once, not
        // twice over.
        drop(frame);
        let response = match parsed {
            Ok(env) if env.version != PROTOCOL_VERSION => Response::Error(format!(
                "protocol version {} but the worker speaks {}; restart the worker after upgrading qwen3q",
                env.version, PROTOCOL_VERSION
            )),
            Ok(env) => {
                let (store, hooks) = (store.clone(), hooks.clone());
                tokio::task::spawn_blocking(move || handle(&*store, env.request, Some(&hooks), crate::now_ms()))
                    .await
                    .unwrap_or_else(|e| Response::Error(format!("request failed: {e}")))
            }
            Err(e) => Response::Error(format!("unreadable request: {e}")),
        };
        let mut out = match serde_json::to_string(&response) {
            Ok(s) => s,
            Err(e) => format!("{{\"Error\":\"cannot encode the answer: {e}\"}}"),
        };
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// How reading one request line ended.
enum Frame {
    /// A whole line (its newline included) is in the buffer.
    Line,
    /// The client closed the connection (a line cut short by it is dropped).
    End,
    /// Over [`MAX_REQUEST_BYTES`] without a newline.
    TooLong,
}

/// Read one request line into `buf`, reading no more than [`MAX_REQUEST_BYTES`] (and a byte).
async fn read_frame<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Frame> {
    use tokio::io::AsyncReadExt;
    let mut limited = (&mut *reader).take(MAX_REQUEST_BYTES as u64 + 1);
    let n = limited.read_until(b'\n', buf).await?;
    Ok(if buf.last() == Some(&b'\n') {
        Frame::Line
    } else if n > MAX_REQUEST_BYTES {
        Frame::TooLong
    } else {
        Frame::End
    })
}

/// Whether a worker answers on `home`'s socket.
pub fn worker_alive(home: &Home) -> bool {
    connect_worker(&home.socket()).is_some()
}
