//! The small types that let the socket server and signal handlers steer the worker loop:
//! shutdown, wake-ups (new work), and cancel requests for the running job.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::job::JobId;

/// Asked once, seen everywhere: the blocking loop polls [`Shutdown::is_triggered`], async
/// tasks await [`Shutdown::wait`].
#[derive(Clone, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    notify: Arc<tokio::sync::Notify>,
}

impl Shutdown {
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    /// Resolves once shutdown has been triggered.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}

/// Wake-ups: how many were asked, and how many the waiting loop has seen.
#[derive(Default)]
struct Wakes {
    asked: u64,
    seen: u64,
}

/// Shutdown, wake-ups and cancel requests, shared by the loop and the server.
#[derive(Clone, Default)]
pub struct Signals {
    pub shutdown: Shutdown,
    /// Wake-ups counted, and how many the loop has seen: a wake that comes while the loop
    /// looks at the store (between two waits) ends its next wait at once, not lost.
    wake: Arc<(Mutex<Wakes>, Condvar)>,
    cancels: Arc<Mutex<HashSet<JobId>>>,
    /// Interactive chats submitted and not yet taken by the loop.
    chats: Arc<Mutex<Inbox>>,
    /// Chats submitted and not yet ended (each holds a [`Ticket`](super::chat::Ticket)).
    open_chats: Arc<AtomicUsize>,
    /// Raised when a chat is submitted, lowered when the loop takes the chats: the engine's
    /// interrupt ([`Decoder::set_interrupt`](crate::engine::Decoder::set_interrupt)), so that
    /// a chat does not wait for the batch's step in progress.
    chat_came: Arc<AtomicBool>,
}

/// Chats handed to the loop, and whether it still takes them.
#[derive(Default)]
struct Inbox {
    chats: Vec<super::chat::ChatRequest>,
    /// The loop has stopped taking chats (it is shutting down): a chat submitted now would
    /// wait for ever.
    closed: bool,
}

/// Why a chat was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// [`MAX_OPEN`](super::chat::MAX_OPEN) chats wait or run already.
    TooMany,
    /// The worker is stopping.
    Stopping,
}

impl Signals {
    /// Something changed (work enqueued, retried, resumed, shutdown): the loop looks again.
    pub fn wake(&self) {
        let (m, cv) = &*self.wake;
        m.lock().unwrap().asked += 1;
        cv.notify_all();
    }

    /// Stop the loop: trigger shutdown and wake it.
    pub fn stop(&self) {
        self.shutdown.trigger();
        self.wake();
    }

    /// Block until woken, shut down, or `timeout` passes (`None`: a minute, so that the wall
    /// clock is looked at again). A wake since the last wait ended (the loop was looking
    /// meanwhile, and may have looked before the change) returns at once. Only the worker
    /// loop waits.
    pub fn wait(&self, timeout: Option<Duration>) {
        let (m, cv) = &*self.wake;
        let mut guard = m.lock().unwrap();
        if guard.asked != guard.seen || self.shutdown.is_triggered() {
            guard.seen = guard.asked;
            return;
        }
        let limit = timeout
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        let (mut guard, _) = cv
            .wait_timeout_while(guard, limit, |w| {
                w.asked == w.seen && !self.shutdown.is_triggered()
            })
            .unwrap();
        guard.seen = guard.asked;
    }

    /// Hand a chat to the loop and wake it; refused (and dropped) while
    /// [`MAX_OPEN`](super::chat::MAX_OPEN) chats wait or run already, or once the loop
    /// stops taking them.
    pub fn submit_chat(&self, mut chat: super::chat::ChatRequest) -> Result<(), Refused> {
        let open = self.open_chats.fetch_add(1, Ordering::SeqCst);
        let ticket = super::chat::Ticket(self.open_chats.clone());
        if open >= super::chat::MAX_OPEN {
            return Err(Refused::TooMany);
        }
        chat.ticket = Some(ticket);
        {
            let mut inbox = self.chats.lock().unwrap();
            if inbox.closed || self.shutdown.is_triggered() {
                return Err(Refused::Stopping);
            }
            inbox.chats.push(chat);
            // Raised with the chat in the inbox, lowered as the loop empties it (both under
            // the inbox's lock): raised exactly while a chat waits there.
            self.chat_came.store(true, Ordering::SeqCst);
        }
        self.wake();
        Ok(())
    }

    /// The flag a submitted chat raises, for the engine to stop its step in progress.
    pub(super) fn chat_flag(&self) -> Arc<AtomicBool> {
        self.chat_came.clone()
    }

    /// The chats submitted since the last call, oldest first (the flag lowered).
    pub(super) fn take_chats(&self) -> Vec<super::chat::ChatRequest> {
        let mut inbox = self.chats.lock().unwrap();
        self.chat_came.store(false, Ordering::SeqCst);
        std::mem::take(&mut inbox.chats)
    }

    /// The loop stops taking chats: the ones submitted and not taken, and none after.
    pub(super) fn close_chats(&self) -> Vec<super::chat::ChatRequest> {
        let mut inbox = self.chats.lock().unwrap();
        inbox.closed = true;
        std::mem::take(&mut inbox.chats)
    }

    pub fn request_cancel(&self, id: JobId) {
        self.cancels.lock().unwrap().insert(id);
    }
    pub fn is_cancelled(&self, id: JobId) -> bool {
        self.cancels.lock().unwrap().contains(&id)
    }
    pub fn forget_cancel(&self, id: JobId) {
        self.cancels.lock().unwrap().remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn wake_ends_a_wait_and_shutdown_ends_every_wait() {
        let s = Signals::default();
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            let started = Instant::now();
            s2.wait(Some(Duration::from_secs(30)));
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        s.wake();
        assert!(t.join().unwrap() < Duration::from_secs(30));
        s.stop();
        s.wait(Some(Duration::from_secs(30))); // returns at once
        assert!(s.shutdown.is_triggered());
    }

    /// A wake that comes while the loop is not waiting (it was reading the store) is not
    /// lost: the next wait returns at once, and only that one.
    #[test]
    fn a_wake_between_two_waits_ends_the_next_one() {
        let s = Signals::default();
        s.wake();
        let started = Instant::now();
        s.wait(Some(Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(5), "at once");
        let started = Instant::now();
        s.wait(Some(Duration::from_millis(200)));
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "the wake was seen: this wait lasts its timeout"
        );
    }

    /// A chat whose answer nobody reads.
    fn a_chat() -> super::super::chat::ChatRequest {
        let (reply, _) = tokio::sync::mpsc::unbounded_channel();
        super::super::chat::ChatRequest {
            model: crate::job::ModelRef {
                name: "m".into(),
                path: "/m.gguf".into(),
                template: None,
            },
            messages: Vec::new(),
            sampling: crate::engine::Sampling {
                max_tokens: 1,
                temperature: 0.0,
                top_p: 1.0,
                top_k: 0,
                min_p: 0.0,
                seed: 0,
            },
            grammar: None,
            stop: Vec::new(),
            thinking: false,
            stream: false,
            received: Instant::now(),
            reply,
            ticket: None,
        }
    }

    #[test]
    fn open_chats_are_capped_and_a_dropped_chat_frees_its_place() {
        use super::super::chat::MAX_OPEN;
        let s = Signals::default();
        let chat = a_chat;
        for _ in 0..MAX_OPEN {
            assert!(s.submit_chat(chat()).is_ok());
        }
        assert_eq!(s.submit_chat(chat()), Err(Refused::TooMany), "one too many");
        let mut taken = s.take_chats();
        assert_eq!(taken.len(), MAX_OPEN);
        assert!(
            s.submit_chat(chat()).is_err(),
            "taken by the loop, still open"
        );
        taken.pop(); // one ended
        assert!(s.submit_chat(chat()).is_ok());
    }

    /// The flag a chat raises stays up until the loop takes the chats: a step that starts
    /// before the loop has seen the chat stops too, and none after.
    #[test]
    fn a_submitted_chat_raises_the_flag_until_the_chats_are_taken() {
        let s = Signals::default();
        let flag = s.chat_flag();
        assert!(!flag.load(Ordering::SeqCst));
        let chat = a_chat();
        assert!(s.submit_chat(chat).is_ok());
        assert!(flag.load(Ordering::SeqCst), "raised");
        assert_eq!(s.take_chats().len(), 1);
        assert!(!flag.load(Ordering::SeqCst), "lowered as the chat is taken");
    }

    #[test]
    fn cancels_are_remembered_until_forgotten() {
        let s = Signals::default();
        s.request_cancel(JobId(3));
        assert!(s.is_cancelled(JobId(3)) && !s.is_cancelled(JobId(4)));
        s.forget_cancel(JobId(3));
        assert!(!s.is_cancelled(JobId(3)));
    }
}
