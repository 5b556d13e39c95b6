//! Long actions (replaying or purging thousands of dead letters, a range replay) run as jobs: the action's request
//! can return at once (`"background": true`) and the page polls `GET /api/jobs/{id}` for how far it got and, at the
//! end, its result. Without `background` the request waits for the same job and answers its result.
//!
//! Jobs are kept in memory, the newest [`KEPT`] of them; running jobs are tracked so that shutdown waits for them
//! (each is bounded: it walks a fixed list of ids or a fixed range).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio_util::task::TaskTracker;

use super::error::ApiError;

/// Finished and running jobs kept for polling.
const KEPT: usize = 64;

/// One action's progress and outcome.
#[derive(Debug)]
pub struct Job {
    id: u64,
    kind: &'static str,
    total: AtomicU64,
    done: AtomicU64,
    outcome: Mutex<Option<Result<Value, ApiError>>>,
}

impl Job {
    /// Sets how many items the action will process.
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// Sets how many it has processed.
    pub fn set_done(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
    }

    fn outcome(&self) -> MutexGuard<'_, Option<Result<Value, ApiError>>> {
        self.outcome.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The job as JSON: `{id, kind, total, done, finished, result | error}`.
    pub fn describe(&self) -> Value {
        let mut value = json!({
            "id": self.id,
            "kind": self.kind,
            "total": self.total.load(Ordering::Relaxed),
            "done": self.done.load(Ordering::Relaxed),
            "finished": false,
        });
        if let (Some(outcome), Some(map)) = (self.outcome().as_ref(), value.as_object_mut()) {
            map.insert("finished".into(), true.into());
            match outcome {
                Ok(result) => map.insert("result".into(), result.clone()),
                Err(err) => map.insert("error".into(), err.body()["error"].clone()),
            };
        }
        value
    }
}

/// The jobs of one dashboard process.
#[derive(Debug, Default)]
pub struct Jobs {
    next: AtomicU64,
    kept: Mutex<VecDeque<Arc<Job>>>,
    tracker: TaskTracker,
}

impl Jobs {
    /// Starts `work` as a job of `kind`; `work` gets the job to report progress on. With `background`, answers
    /// the job's description at once (202); otherwise waits and answers its result (or error).
    pub async fn run<F, Fut>(
        &self,
        kind: &'static str,
        background: bool,
        work: F,
    ) -> Result<(bool, Value), ApiError>
    where
        F: FnOnce(Arc<Job>) -> Fut,
        Fut: Future<Output = Result<Value, ApiError>> + Send + 'static,
    {
        let job = Arc::new(Job {
            id: self.next.fetch_add(1, Ordering::Relaxed) + 1,
            kind,
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            outcome: Mutex::new(None),
        });
        {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            kept.push_back(job.clone());
            while kept.len() > KEPT {
                kept.pop_front();
            }
        }
        let future = work(job.clone());
        let finished = job.clone();
        let handle = self.tracker.spawn(async move {
            let outcome = future.await;
            *finished.outcome() = Some(outcome.clone());
            outcome
        });
        if background {
            return Ok((true, job.describe()));
        }
        match handle.await {
            Ok(outcome) => outcome.map(|v| (false, v)),
            Err(err) => Err(ApiError::internal(format!(
                "the action did not finish: {err}"
            ))),
        }
    }

    /// A kept job by id.
    pub fn get(&self, id: u64) -> Option<Arc<Job>> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().find(|j| j.id == id).cloned()
    }

    /// Waits for every running job (at shutdown).
    pub async fn drain(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}
