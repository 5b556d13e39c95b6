//! Whether the current thread is running a handler's code: for a panic hook that stays quiet about handler panics.
//!
//! The mark is a thread-local counter, raised while a handler is called (decoding its params, building its future),
//! during each poll of its future and while its result is encoded, and lowered when that ends, by unwinding too.
//! It costs two thread-local writes per poll.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    /// How many handler calls or polls are running on this thread (nested when a handler polls another).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether the current thread is running a responder handler's code right now: a panic raised there is caught by the
/// responder and logged once with the request id, so a panic hook can skip it.
///
/// The responder catches a handler's panic (`catch_unwind`) and logs it once, through `tracing`, with the request
/// id, service and function key; the request stays pending for redelivery. But Rust calls the process's panic hook
/// *before* the unwinding reaches that catch, and the default hook prints `thread '…' panicked at …` (and, with
/// `RUST_BACKTRACE`, a backtrace) on stderr: a second, unstructured report of the same panic. redcall installs no
/// global hook (the hook belongs to the application); an application that wants one report per handler panic
/// installs its own hook and asks [`in_handler`] there:
///
/// ```
/// let default_hook = std::panic::take_hook();
/// std::panic::set_hook(Box::new(move |info| {
///     // A handler's panic is caught and logged by the responder, with the request id.
///     if !redcall::in_handler() {
///         default_hook(info);
///     }
/// }));
/// ```
pub fn in_handler() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// Marks the current thread as running handler code until dropped (also when dropped by unwinding).
pub(crate) struct Entered(());

impl Entered {
    pub(crate) fn new() -> Self {
        DEPTH.with(|d| d.set(d.get().saturating_add(1)));
        Entered(())
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// A handler's future, every poll of which counts as handler code. Holds the future by a pinned reference, so
/// wrapping it allocates nothing.
pub(crate) struct Marked<'a, F>(pub(crate) Pin<&'a mut F>);

impl<F: Future> Future for Marked<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _entered = Entered::new();
        self.0.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_is_lowered_after_a_panic() {
        assert!(!in_handler());
        let caught = std::panic::catch_unwind(|| {
            let _entered = Entered::new();
            assert!(in_handler());
            panic!("inside");
        });
        assert!(caught.is_err());
        assert!(!in_handler());
    }
}
