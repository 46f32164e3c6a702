//! Synchronisation that parks coroutines, not threads: [`Mutex`], [`WaitGroup`], [`Once`],
//! [`Semaphore`]. Each keeps its waiters in a FIFO of wait tokens (wait.rs) under a short
//! internal lock that is never held across a park. Used from a plain thread, they block the
//! thread.

mod mutex;
mod once;
mod semaphore;
mod waitgroup;

pub use mutex::{Mutex, MutexGuard};
pub use once::Once;
pub use semaphore::{Semaphore, SemaphorePermit};
pub use waitgroup::WaitGroup;
