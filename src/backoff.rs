//! One exponential backoff for every retry loop: the responder's reader reconnecting, answers retried while Redis
//! is away, and the reply router's reconnect.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The first pause of every backoff.
const INITIAL: Duration = Duration::from_millis(50);

/// Pauses that double from 50 ms up to a cap, and start over after a success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff whose pauses grow up to `max`.
    pub(crate) fn up_to(max: Duration) -> Self {
        Self { next: INITIAL, max }
    }

    /// The pause to take now; the one after it is twice as long, up to the cap.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// The pause [`Backoff::next_pause`] would give now, without taking it.
    pub(crate) fn peek(&self) -> Duration {
        self.next
    }

    /// Starts over from the first pause (after a success).
    pub(crate) fn reset(&mut self) {
        self.next = INITIAL;
    }

    /// Sleeps the next pause unless `stop` is cancelled first; true when stopped.
    pub(crate) async fn sleep_or_stop(&mut self, stop: &CancellationToken) -> bool {
        let pause = self.next_pause();
        tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(pause) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_start_over() {
        let mut backoff = Backoff::up_to(Duration::from_millis(300));
        let pauses: Vec<u128> = (0..5).map(|_| backoff.next_pause().as_millis()).collect();
        assert_eq!(pauses, [50, 100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.peek(), Duration::from_millis(50));
    }
}
