//! What the workloads share: a deadline, and running a closure on N scoped threads while
//! timing the whole.

use super::Outcome;
use std::time::{Duration, Instant};

/// The end of a run's time budget. Cheap to poll (`Instant::now` is a vDSO call), but the
/// workloads still poll it once per round, not once per operation.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline `budget` from now.
    pub fn after(budget: Duration) -> Deadline {
        Deadline(Instant::now() + budget)
    }

    /// Rounds until the budget is spent, and always at least one, so a run on a machine busy
    /// enough to deschedule us past the deadline still measures something.
    /// Yields the round number, from 0.
    pub fn rounds(self) -> impl Iterator<Item = u64> {
        std::iter::once(())
            .chain(std::iter::from_fn(move || (!self.passed()).then_some(())))
            .zip(0..)
            .map(|((), round)| round)
    }

    /// Whether the budget is spent.
    #[inline]
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// Runs `work(thread_index)` on `threads` scoped threads at once and returns the sum of the
/// operation counts they return, with the wall time from before the first spawn to after the
/// last join.
pub fn parallel<F>(threads: usize, work: F) -> Outcome
where
    F: Fn(usize) -> u64 + Sync,
{
    let start = Instant::now();
    let ops = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                scope.spawn({
                    let work = &work;
                    move || work(i)
                })
            })
            .collect();
        join_sum(handles)
    });
    Outcome {
        ops,
        elapsed: start.elapsed(),
    }
}

/// Joins scoped threads that each return an operation count and sums the counts, passing on
/// a worker's panic (a failed check) as the run's panic.
pub fn join_sum(handles: Vec<std::thread::ScopedJoinHandle<'_, u64>>) -> u64 {
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_deadline_still_gives_one_round() {
        let spent = Deadline::after(Duration::ZERO);
        assert_eq!(spent.rounds().collect::<Vec<_>>(), vec![0]);
        let rounds = Deadline::after(Duration::from_millis(5))
            .rounds()
            .take(3)
            .collect::<Vec<_>>();
        assert_eq!(rounds, vec![0, 1, 2]);
    }

    #[test]
    fn parallel_sums_the_threads_ops() {
        let outcome = parallel(3, |i| i as u64 + 1);
        assert_eq!(outcome.ops, 6);
    }
}
