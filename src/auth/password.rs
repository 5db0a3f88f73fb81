//! Password hashing with argon2id.
//!
//! Hashing is CPU-bound (~90 ms in release) and each hash fills 19 MiB of memory, so it
//! runs on a few threads of its own, one per core, fed in order from a queue. That bounds
//! both the cores and the memory a burst of registrations or logins can take (on the
//! blocking pool, 64 at once would need 1.2 GB), and each thread reuses its allocation from
//! one hash to the next instead of every blocking thread keeping one. After each hash the
//! thread hands the freed buffer back to the system ([`after_each_hash`]; the binary, which
//! chose the allocator, says how). Measured on the server after 30 to 90 registrations, 8
//! at a time: 64–208 MB resident before, 42 MB after (BENCHMARKS.md).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::error::AppError;

pub async fn hash(password: String) -> Result<String, AppError> {
    on_hashing_thread(move || hash_now(&password)).await?
}

fn hash_now(password: &str) -> Result<String, AppError> {
    let hash: PasswordHash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| AppError::Internal(format!("password hashing: {e}")))?;
    Ok(hash.to_string())
}

/// Checks a password. With no stored hash (unknown e-mail) it still does the same work
/// against a fixed hash, so the answer time does not tell whether the account exists.
pub async fn verify(password: String, stored: Option<String>) -> bool {
    on_hashing_thread(move || {
        let known = stored.is_some();
        let stored = match stored {
            Some(s) => s,
            None => match dummy_hash() {
                Some(s) => s.to_string(),
                None => return false,
            },
        };
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
            && known
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| hash_now("not-a-real-password").ok())
        .as_deref()
}

type Job = Box<dyn FnOnce() + Send>;

static AFTER_EACH_HASH: OnceLock<fn()> = OnceLock::new();

/// Sets what a hashing thread runs after each job: the allocator's way of returning the
/// memory the hash freed. Only the first call counts.
pub fn after_each_hash(release: fn()) {
    let _ = AFTER_EACH_HASH.set(release);
}

/// The queue of the hashing threads, started on first use.
fn hashing_queue() -> Result<&'static Sender<Job>, AppError> {
    static QUEUE: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    QUEUE
        .get_or_init(start_hashing_threads)
        .as_ref()
        .ok_or_else(|| AppError::Internal("no password hashing thread could be started".into()))
}

/// One thread per core: more would only share the cores and hold more memory.
pub(crate) fn hashing_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn start_hashing_threads() -> Option<Sender<Job>> {
    let (queue, jobs) = channel::<Job>();
    let jobs = Arc::new(Mutex::new(jobs));
    let mut started = 0;
    for i in 0..hashing_threads() {
        let jobs = jobs.clone();
        match std::thread::Builder::new()
            .name(format!("password-hash-{i}"))
            .spawn(move || run_jobs(&jobs))
        {
            Ok(_) => started += 1,
            Err(e) => tracing::error!(error = %e, "starting a password hashing thread"),
        }
    }
    (started > 0).then_some(queue)
}

fn run_jobs(jobs: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let next = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        let Ok(job) = next else { return };
        // A panicking job loses its own answer (the caller sees an internal error), not
        // the thread.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

async fn on_hashing_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let result = work();
        // Before answering, so the caller finds the memory already handed back.
        if let Some(release) = AFTER_EACH_HASH.get() {
            release();
        }
        let _ = answer.send(result);
    });
    hashing_queue()?
        .send(job)
        .map_err(|_| AppError::Internal("the password hashing threads have stopped".into()))?;
    answered
        .await
        .map_err(|_| AppError::Internal("a password hashing job failed".into()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let h = super::hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify("correct horse".into(), Some(h.clone())).await);
        assert!(!super::verify("wrong horse".into(), Some(h)).await);
        assert!(!super::verify("correct horse".into(), None).await);
    }

    /// The hook runs on the hashing thread after each job, before the answer comes back.
    #[tokio::test]
    async fn the_release_hook_runs_after_each_hash() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static RELEASED_ON_HASHING_THREAD: AtomicUsize = AtomicUsize::new(0);
        fn release() {
            let on_hashing_thread = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("password-hash-"));
            if on_hashing_thread {
                RELEASED_ON_HASHING_THREAD.fetch_add(1, Ordering::SeqCst);
            }
        }
        super::after_each_hash(release);
        let before = RELEASED_ON_HASHING_THREAD.load(Ordering::SeqCst);
        super::hash("correct horse".into()).await.unwrap();
        assert!(RELEASED_ON_HASHING_THREAD.load(Ordering::SeqCst) > before);
    }

    /// However many hashes are asked for at once, they run on the hashing threads only,
    /// so at most one argon2 buffer per core exists.
    #[tokio::test]
    async fn concurrent_hashing_stays_on_one_thread_per_core() {
        let threads = super::hashing_threads();
        let jobs = (0..threads * 4).map(|_| {
            super::on_hashing_thread(|| std::thread::current().name().map(str::to_string))
        });
        let names: HashSet<Option<String>> = futures::future::join_all(jobs)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert!(names.len() <= threads, "{names:?}");
        assert!(
            names.iter().all(|n| n
                .as_deref()
                .is_some_and(|n| n.starts_with("password-hash-"))),
            "{names:?}"
        );
    }
}
