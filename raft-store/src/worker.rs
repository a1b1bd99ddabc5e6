//! [`Worker`]: one named thread that runs jobs one after the other, for work that should stay
//! on the same thread from call to call.
//!
//! Applying is the state machine's hottest work. On tokio's blocking pool each batch ran on
//! whichever pool thread was idle (about five of them in turn, in a profile at 64 clients), so
//! consecutive batches met a different allocator heap (mimalloc keeps one per thread) and cold
//! CPU caches. One apply thread keeps those warm (+1.7 to +5.9 % placements/s, BENCHMARKS.md);
//! openraft applies one batch at a time anyway, so nothing waits that could have run in
//! parallel.
//!
//! The thread ends once every handle is dropped and the jobs queued before are done.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::error::StoreError;

type Job = Box<dyn FnOnce() + Send>;

/// A handle on the thread; clones share it.
#[derive(Clone)]
pub(crate) struct Worker {
    jobs: mpsc::Sender<Job>,
    /// The file its work is about, for errors.
    path: PathBuf,
}

impl Worker {
    /// Starts the thread `name` for work on the file at `path`.
    pub(crate) fn spawn(name: &str, path: &Path) -> Result<Self, StoreError> {
        let (jobs, received) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for job in received {
                    job();
                }
            })
            .map_err(|e| StoreError::from_io(path, "starting a storage thread", e))?;
        Ok(Self {
            jobs,
            path: path.to_path_buf(),
        })
    }

    /// Runs `work` on the thread after the jobs queued before it and waits for its result. A
    /// panic in `work` (a bug, never a decision made on disk data) becomes
    /// [`StoreError::TaskFailed`] and leaves the thread serving; like a task of the blocking
    /// pool, `work` runs to its end even if the caller stops waiting.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            // The caller may have stopped waiting; the work is done either way.
            let _ = answer.send(result);
        });
        let failed = |detail: String| StoreError::TaskFailed {
            path: self.path.clone(),
            detail,
        };
        self.jobs
            .send(job)
            .map_err(|_| failed("its thread has stopped".into()))?;
        match answered.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => Err(failed(format!("panicked: {}", panic_message(&*panic)))),
            Err(_) => Err(failed("its thread stopped before answering".into())),
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_on_one_thread_and_a_panic_is_an_error() {
        let worker = Worker::spawn("test-worker", Path::new("state.redb")).expect("spawn");
        let names = thread_names(&worker).await;
        assert!(names.iter().all(|n| n == "test-worker"), "{names:?}");

        let error = worker
            .run(|| -> Result<(), StoreError> { panic!("a bug") })
            .await
            .expect_err("a panic is an error");
        assert!(
            matches!(&error, StoreError::TaskFailed { detail, .. } if detail.contains("a bug")),
            "{error}"
        );
        // The thread still serves after the panic.
        assert_eq!(worker.run(|| Ok(7)).await.expect("after a panic"), 7);
    }

    async fn thread_names(worker: &Worker) -> Vec<String> {
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(
                worker
                    .run(|| Ok(std::thread::current().name().unwrap_or("").to_string()))
                    .await
                    .expect("run"),
            );
        }
        names
    }
}
