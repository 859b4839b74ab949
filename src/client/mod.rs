//! The CLI's side: talk to the running worker over its socket, or, with no worker, open the
//! store directly. Never both: only one process ever opens the store. A process that opened it
//! leaves its status card on closing (`card`), which answers the next `status` while no
//! worker runs and the store is unchanged.

pub mod card;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::home::Home;
use crate::protocol::{Envelope, Request, Response, PROTOCOL_VERSION};
use std::sync::Arc;

use crate::queue::{OpenOptions, Queue, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("talking to the worker at {0}: {1}")]
    Socket(String, std::io::Error),
    #[error("the worker sent an unreadable answer: {0}")]
    Protocol(String),
    #[error(
        "the store is in use by another qwen3q process (a worker starting up, or another command); try again"
    )]
    Busy,
    #[error("the request is {} MiB, over the {} MiB the worker reads in one", .0 >> 20, crate::protocol::MAX_REQUEST_BYTES >> 20)]
    TooLarge(usize),
}

/// What became of a request: its answer, or (over the worker's frame limit) the request
/// itself, unsent, with its size as JSON.
pub enum Sent {
    Answer(Response),
    TooLarge(Request, usize),
}

/// A way to reach the store.
pub enum Connection {
    /// A worker is alive: requests go through its socket.
    Worker(UnixStream),
    /// No worker: this process opened the store itself.
    Direct(DirectStore),
}

/// The store, opened by this process; on closing, it leaves its status card.
pub struct DirectStore {
    /// Always `Some` until dropped.
    store: Option<Arc<dyn Queue>>,
    /// Where the card goes.
    home: Home,
}

impl DirectStore {
    fn store(&self) -> &dyn Queue {
        &**self.store.as_ref().expect("open until dropped")
    }
}

impl Drop for DirectStore {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        close_with_card(&self.home, store);
    }
}

/// Close `store` (the last handle of it) and leave its status card. A handle still held
/// elsewhere means the store stays open: then no card.
pub fn close_with_card(home: &Home, store: Arc<dyn Queue>) {
    let report = match crate::handler::handle(&*store, Request::Status, None, crate::now_ms()) {
        Response::Status(report) if Arc::strong_count(&store) == 1 => report,
        _ => return,
    };
    drop(store);
    card::write(&home.dir, &home.store(), *report);
}

/// The store's status from its card, when no worker answers and the card is still true (see
/// [`card`]); `None` means: ask the worker or the store.
pub fn status_from_card(home: &Home) -> Option<Response> {
    if connect_worker(&home.socket()).is_some() {
        return None;
    }
    let report = card::read(&home.dir, &home.store())?;
    tracing::debug!("status from the card of the store as it was closed last");
    Some(Response::Status(Box::new(report)))
}

/// Connect to a live worker's socket, if there is one. A socket file nobody listens on (left
/// by a dead worker) counts as none.
pub fn connect_worker(socket: &Path) -> Option<UnixStream> {
    UnixStream::connect(socket).ok()
}

impl Connection {
    /// The worker's socket if one is alive, else the store. While the store is locked but no
    /// worker answers (a worker starting, or another command in direct mode), keep trying
    /// both for a while.
    pub fn open(home: &Home, store_opts: &OpenOptions) -> Result<Connection, ClientError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let opts = OpenOptions {
            lock_wait: Duration::from_millis(300),
            ..store_opts.clone()
        };
        loop {
            if let Some(s) = connect_worker(&home.socket()) {
                return Ok(Connection::Worker(s));
            }
            match crate::queue::open(&home.store(), &opts) {
                Ok(store) => {
                    return Ok(Connection::Direct(DirectStore {
                        store: Some(store),
                        home: home.clone(),
                    }))
                }
                Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(StoreError::Locked(_)) => return Err(ClientError::Busy),
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn is_worker(&self) -> bool {
        matches!(self, Connection::Worker(_))
    }

    /// Send one request and read its answer.
    pub fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        match self.send(request)? {
            Sent::Answer(response) => Ok(response),
            Sent::TooLarge(_, bytes) => Err(ClientError::TooLarge(bytes)),
        }
    }

    /// Send one request and read its answer; a request over the worker's frame limit comes
    /// back unsent with its size (serialized once either way: a caller may split it).
    pub fn send(&mut self, request: Request) -> Result<Sent, ClientError> {
        match self {
            Connection::Direct(direct) => Ok(Sent::Answer(crate::handler::handle(
                direct.store(),
                request,
                None,
                crate::now_ms(),
            ))),
            Connection::Worker(stream) => {
                let io = |e| ClientError::Socket("socket".into(), e);
                let envelope = Envelope {
                    version: PROTOCOL_VERSION,
                    request,
                };
                let mut line = serde_json::to_string(&envelope)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                line.push('\n');
                if line.len() > crate::protocol::MAX_REQUEST_BYTES {
                    return Ok(Sent::TooLarge(envelope.request, line.len()));
                }
                drop(envelope);
                stream.write_all(line.as_bytes()).map_err(io)?;
                let mut reader = BufReader::new(&*stream);
                let mut answer = String::new();
                reader.read_line(&mut answer).map_err(io)?;
                if answer.is_empty() {
                    return Err(ClientError::Protocol(
                        "the worker closed the connection".into(),
                    ));
                }
                serde_json::from_str(&answer)
                    .map(Sent::Answer)
                    .map_err(|e| ClientError::Protocol(e.to_string()))
            }
        }
    }
}
