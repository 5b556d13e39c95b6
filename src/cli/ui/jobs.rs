//! Long actions (replaying or purging thousands of dead letters, a range replay) run as jobs: the action's request
//! can return at once (`"background": true`) and the page polls `GET /api/jobs/{id}` for how far it got and, at the
//! end, its result. Without `background` the request waits for the same job and answers its result.
//!
//! Jobs are kept in memory, the newest [`KEPT`] finished ones and every running one (a running job is never
//! evicted, so its poller always finds it); at most [`MAX_RUNNING`] run at once (another action is answered 429).
//! A job's result lists at most [`MAX_LISTED`] entries of each kind, with the counts of all (see `docs/ui.md`), so
//! a dry run over a range of half a million entries keeps a few hundred kilobytes, not a hundred megabytes.
//! Running jobs are tracked so that shutdown waits for them (each is bounded: it walks a fixed list of ids or a
//! fixed range).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio_util::task::TaskTracker;

use super::error::ApiError;

/// Finished jobs kept for polling (running ones are kept too, whatever their number).
pub const KEPT: usize = 64;
/// Most jobs running at once.
pub const MAX_RUNNING: usize = 8;
/// Most entries of each list (replayed, skipped, not found) a job's result keeps.
pub const MAX_LISTED: usize = 1000;

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

    /// Whether it has finished.
    fn finished(&self) -> bool {
        self.outcome().is_some()
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

/// One running job in the count of running jobs, until dropped.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Drops the oldest finished jobs while more than [`KEPT`] finished ones are kept; running ones stay. Run as a job
/// starts, so at most [`KEPT`] + [`MAX_RUNNING`] jobs are kept.
fn evict(kept: &mut VecDeque<Arc<Job>>) {
    let mut finished = kept.iter().filter(|j| j.finished()).count();
    while finished > KEPT {
        match kept.iter().position(|j| j.finished()) {
            Some(oldest) => {
                kept.remove(oldest);
                finished -= 1;
            }
            None => break,
        }
    }
}

/// At most [`MAX_LISTED`] of `items`, and how many there were.
pub fn capped<T: serde::Serialize>(items: &[T]) -> (Value, usize) {
    let kept = &items[..items.len().min(MAX_LISTED)];
    (json!(kept), items.len())
}

/// The jobs of one dashboard process.
#[derive(Debug, Default)]
pub struct Jobs {
    next: AtomicU64,
    kept: Mutex<VecDeque<Arc<Job>>>,
    running: Arc<AtomicUsize>,
    tracker: TaskTracker,
}

impl Jobs {
    /// Starts `work` as a job of `kind`; `work` gets the job to report progress on. With `background`, answers
    /// the job's description at once (202); otherwise waits and answers its result (or error).
    ///
    /// # Errors
    /// A 429 ([`ApiError::too_many`]) when [`MAX_RUNNING`] jobs are running; the job's own error otherwise.
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
        let admitted = self
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_RUNNING).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return Err(ApiError::too_many(format!(
                "{MAX_RUNNING} actions are running already: try again once one has finished"
            )));
        }
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
            evict(&mut kept);
        }
        let future = work(job.clone());
        let finished = job.clone();
        let running = Running(self.running.clone());
        let handle = self.tracker.spawn(async move {
            // Counted out when the task ends, even by a panic.
            let _running = running;
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use tokio::sync::watch;

    /// Starts a background job that runs until `release` says so.
    async fn held(jobs: &Jobs, release: &watch::Sender<bool>) -> Result<u64, ApiError> {
        let mut released = release.subscribe();
        let (_, job) = jobs
            .run("held", true, move |_job| async move {
                let _ = released.wait_for(|r| *r).await;
                Ok(json!("done"))
            })
            .await?;
        Ok(job["id"].as_u64().unwrap_or_default())
    }

    #[tokio::test]
    async fn running_jobs_stay_and_at_most_max_running_run() {
        let jobs = Jobs::default();
        let (release, _) = watch::channel(false);
        let first = held(&jobs, &release).await.expect("first job");
        // Many quick jobs finish after it: the oldest finished ones are evicted, the running one stays.
        for _ in 0..KEPT + 10 {
            jobs.run("quick", false, |_job| async { Ok(json!(1)) })
                .await
                .expect("quick job");
        }
        let job = jobs.get(first).expect("a running job is never evicted");
        assert_eq!(job.describe()["finished"], false);
        assert!(
            jobs.get(first + 1).is_none(),
            "the oldest finished job is evicted"
        );
        assert!(
            jobs.get(first + KEPT as u64 + 10).is_some(),
            "the newest is kept"
        );
        let kept = jobs.kept.lock().expect("kept").len();
        assert!(kept <= KEPT + MAX_RUNNING, "{kept} jobs kept");
        // MAX_RUNNING run at once; one more is refused with a 429.
        for _ in 1..MAX_RUNNING {
            held(&jobs, &release).await.expect("admitted");
        }
        let refused = held(&jobs, &release).await.expect_err("one too many");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        // Once they finish, jobs are admitted again.
        release.send_replace(true);
        let end = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while jobs.running.load(Ordering::Acquire) > 0 {
            assert!(tokio::time::Instant::now() < end, "the jobs did not finish");
            tokio::task::yield_now().await;
        }
        assert_eq!(jobs.get(first).expect("kept").describe()["result"], "done");
        held(&jobs, &release).await.expect("admitted again");
    }

    #[test]
    fn results_list_at_most_max_listed_entries() {
        let items: Vec<u32> = (0..MAX_LISTED as u32 + 7).collect();
        let (kept, count) = capped(&items);
        assert_eq!(count, MAX_LISTED + 7);
        assert_eq!(kept.as_array().map(Vec::len), Some(MAX_LISTED));
        assert_eq!(capped(&items[..3]).0, json!([0, 1, 2]));
    }
}
