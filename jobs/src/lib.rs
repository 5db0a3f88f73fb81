//! Background jobs of Estate API: job definitions and the worker process (SPEC §6).
//!
//! Not built yet: the outbox relay, apalis workers and the jobs themselves come with the
//! job-workers issue. Until then `estate worker` says so and exits with an error, rather
//! than pretending to process jobs.

#[derive(Debug, thiserror::Error)]
#[error(
    "the job worker is not built yet; `estate worker` will run jobs once the job-workers issue lands"
)]
pub struct WorkerNotBuilt;

/// Runs the job worker. Currently refuses, see the crate documentation.
pub fn run_worker() -> Result<(), WorkerNotBuilt> {
    Err(WorkerNotBuilt)
}
