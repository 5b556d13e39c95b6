//! Delayed requests: `send_in` / `send_at` store the request at once (its record: call info works and the id is
//! taken) and put its id in the schedule `T:delayed` instead of the requests stream; responders promote it to the
//! stream when it is due (see `responder/delayed.rs`). Undelayed requests never touch the schedule.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::request::IdOrigin;
use super::{PendingReply, Requester};
use crate::error::Result;

impl Requester {
    /// Like [`Requester::send`], but the request is not handed to a handler before `delay` has passed (by Redis's
    /// clock). It is stored at once: [`Requester::call_info`] finds it, `status` shows it scheduled, `stats` counts
    /// it, and [`Requester::cancel`] cancels it. The caller's `timeout` counts from now, the send: a delay longer
    /// than the timeout makes a request that expires before it runs.
    ///
    /// # Errors
    /// As [`Requester::send`].
    pub async fn send_in<P>(
        &self,
        id: &str,
        func_key: &str,
        params: &P,
        delay: Duration,
        timeout: Duration,
    ) -> Result<PendingReply>
    where
        P: Serialize + ?Sized,
    {
        let delay = crate::config::clamp(delay);
        self.add(
            id,
            func_key,
            params,
            timeout,
            IdOrigin::Caller,
            None,
            Some(delay),
        )
        .await
    }

    /// Like [`Requester::send_in`], due at `at` (a time already past means at once). The delay is measured by this
    /// machine's clock, then counted on Redis's.
    ///
    /// # Errors
    /// As [`Requester::send`].
    pub async fn send_at<P>(
        &self,
        id: &str,
        func_key: &str,
        params: &P,
        at: SystemTime,
        timeout: Duration,
    ) -> Result<PendingReply>
    where
        P: Serialize + ?Sized,
    {
        let delay = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        self.send_in(id, func_key, params, delay, timeout).await
    }
}
