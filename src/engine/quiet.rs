//! llama.cpp reports a decode that its abort callback stopped as a failure: `failed to compute
//! graph`, `failed to decode, ret = 2` at error level, and a warning for each sequence whose
//! cells it removed. A stop for a chat is routine (see
//! [`Decoder::set_interrupt`](super::Decoder::set_interrupt)), so the engine runs each
//! stoppable decode inside [`stoppable`], and the worker's log filter drops llama.cpp's lines
//! ([`muted`]) on that thread while the decode's flag is raised. A real failure in such a decode
//! still ends it with an error other than the stop, which the engine reports.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

thread_local! {
    /// The interrupt flag of the stoppable decode this thread is in, if any.
    static DECODING: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Run `decode` as one that `flag` may stop (nothing is marked for `None`).
pub fn stoppable<T>(flag: Option<&Arc<AtomicBool>>, decode: impl FnOnce() -> T) -> T {
    /// Unmarks the thread however `decode` ends.
    struct Unmark;
    impl Drop for Unmark {
        fn drop(&mut self) {
            DECODING.with(|d| d.borrow_mut().take());
        }
    }
    let Some(flag) = flag else {
        return decode();
    };
    DECODING.with(|d| *d.borrow_mut() = Some(flag.clone()));
    let _unmark = Unmark;
    decode()
}

/// This thread is in a stoppable decode whose flag is raised: llama.cpp's lines now say only
/// that it stops.
pub fn muted() -> bool {
    DECODING.with(|d| {
        d.try_borrow()
            .is_ok_and(|f| f.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muted_only_inside_a_stoppable_decode_whose_flag_is_raised() {
        let flag = Arc::new(AtomicBool::new(false));
        assert!(!muted());
        stoppable(Some(&flag), || {
            assert!(!muted(), "not raised");
            flag.store(true, Ordering::Relaxed);
            assert!(muted());
            std::thread::spawn(|| assert!(!muted(), "another thread"))
                .join()
                .unwrap();
        });
        assert!(!muted(), "after the decode");
        stoppable(None, || assert!(!muted(), "a decode nobody may stop"));
        let _ = std::panic::catch_unwind(|| stoppable(Some(&flag), || panic!("a failed decode")));
        assert!(!muted(), "unmarked after a panic too");
    }
}
