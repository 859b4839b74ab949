//! The small types that let the socket server and signal handlers steer the worker loop:
//! shutdown, wake-ups (new work), and cancel requests for the running job.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
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

    #[test]
    fn cancels_are_remembered_until_forgotten() {
        let s = Signals::default();
        s.request_cancel(JobId(3));
        assert!(s.is_cancelled(JobId(3)) && !s.is_cancelled(JobId(4)));
        s.forget_cancel(JobId(3));
        assert!(!s.is_cancelled(JobId(3)));
    }
}
