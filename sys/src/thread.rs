//! Threads: kernel ids, liveness, yielding; and the few pthread calls Tessera makes without
//! std (a detached helper thread, a key whose destructor runs at thread exit, the bounds of
//! a thread's stack).

use core::ffi::c_void;

use crate::error::OsError;

/// The entry point of a thread started with [`spawn_detached`].
pub type Entry = extern "C" fn(*mut c_void) -> *mut c_void;

/// The calling thread's kernel id (`gettid(2)`), always positive. Cannot fail.
#[inline]
pub fn gettid() -> i32 {
    // SAFETY: `gettid` has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether thread `tid` exists in this process: `tgkill(getpid(), tid, 0)` sends no signal
/// and fails with `ESRCH` only when there is no such thread in our thread group (any other
/// failure, `EPERM` say, still means the thread is there).
pub fn thread_alive(tid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) };
    r == 0 || crate::error::errno() != libc::ESRCH
}

/// How many times the kernel has preempted the calling thread so far (its involuntary
/// context switches, `getrusage(RUSAGE_THREAD)`'s `ru_nivcsw`): a thread that keeps
/// losing its CPU to other runnable threads sees it grow. 0 if the call fails (it cannot
/// with these arguments).
pub fn involuntary_switches() -> u64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: `usage` is a valid, exclusively borrowed rusage for the kernel to fill.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    if rc != 0 {
        return 0;
    }
    usage.ru_nivcsw as u64
}

/// Puts the calling thread under `SCHED_BATCH` (`sched_setscheduler(2)`, nice value kept):
/// the same share of the CPU as any normal thread, but its wake-ups never preempt the
/// thread running on the CPU it wakes on; it runs when that thread's slice ends or the CPU
/// falls idle. For a watchdog that wakes often on a timer and is rarely urgent.
///
/// Errors: `EPERM` (a seccomp or security policy refusing it); the thread keeps its policy.
pub fn no_wakeup_preemption() -> Result<(), OsError> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid `sched_param` (priority 0, as
    // `SCHED_BATCH` requires).
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(OsError(crate::error::errno()))
    }
}

/// `sched_yield(2)`, for brief waits on another thread. Cannot fail on Linux.
pub fn yield_now() {
    // SAFETY: no preconditions.
    unsafe { libc::sched_yield() };
}

/// Sleeps about `us` microseconds (`nanosleep(2)`; a signal may end it early), for waits on
/// another thread that may not be running.
pub fn sleep_us(us: u32) {
    let ts = libc::timespec {
        tv_sec: (us / 1_000_000) as libc::time_t,
        tv_nsec: (us % 1_000_000) as libc::c_long * 1000,
    };
    // SAFETY: `ts` is a valid timespec for the call; the remainder is not wanted.
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}

/// Starts a detached thread running `entry(null)` on a `stack_size`-byte stack, with every
/// signal blocked (it must never run a program's signal handler); the caller's mask is left
/// as it was.
///
/// Errors: `EAGAIN` (a thread or process limit), `EINVAL` (a stack size glibc rejects),
/// `EPERM`.
pub fn spawn_detached(entry: Entry, stack_size: usize) -> Result<(), OsError> {
    // SAFETY: plain pthread calls on locals; the new thread runs `entry`, which takes no
    // argument. Signals are blocked around the creation so the thread starts with all of
    // them blocked, and the caller's mask is restored.
    let rc = unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstacksize(&mut attr, stack_size);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut thread: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut thread, &attr, entry, core::ptr::null_mut());
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        rc
    };
    if rc == 0 { Ok(()) } else { Err(OsError(rc)) }
}

/// Names the calling thread (`PR_SET_NAME`; the kernel keeps 15 bytes), for `top`, `perf`
/// and debuggers. Errors are ignored: a name is a courtesy.
pub fn set_name(name: &core::ffi::CStr) {
    // SAFETY: names the calling thread; `name` is a NUL-terminated string.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// A thread-specific key (`pthread_key_create`) whose `destructor` runs at the exit of each
/// thread that set a non-null value for it, with that value.
///
/// Errors: `EAGAIN` (the process is out of keys, `PTHREAD_KEYS_MAX`), `ENOMEM`.
pub fn key_create(destructor: extern "C" fn(*mut c_void)) -> Result<u32, OsError> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor is an `extern "C"` fn, valid for
    // the life of the process.
    match unsafe { libc::pthread_key_create(&mut key, Some(destructor)) } {
        0 => Ok(key),
        e => Err(OsError(e)),
    }
}

/// Sets the calling thread's value of `key`.
///
/// Errors: `ENOMEM` (glibc allocates a second-level block, from `malloc`, for keys past the
/// first 32), `EINVAL` (not a key).
///
/// # Safety
/// `key` must come from [`key_create`]; the value must be one its destructor accepts.
pub unsafe fn set_specific(key: u32, value: *mut c_void) -> Result<(), OsError> {
    // SAFETY: a key made by `pthread_key_create` (the contract).
    match unsafe { libc::pthread_setspecific(key, value) } {
        0 => Ok(()),
        e => Err(OsError(e)),
    }
}

/// The calling thread's stack as the C library reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadStack {
    /// Its lowest address (glibc counts the guard in, at the low end).
    pub base: usize,
    /// Its length in bytes, guard included.
    pub size: usize,
    /// The guard's length (0 for the main thread).
    pub guard: usize,
}

/// The calling thread's stack (`pthread_getattr_np`); `None` when the C library cannot say.
/// Not for the allocator's paths: for the main thread glibc reads `/proc/self/maps` through
/// stdio, which allocates.
pub fn stack() -> Option<ThreadStack> {
    // SAFETY: an all-zero pthread_attr_t is valid storage for pthread_getattr_np to fill.
    let mut attr: libc::pthread_attr_t = unsafe { core::mem::zeroed() };
    // SAFETY: `attr` is valid storage; on success it must be destroyed, done below.
    if unsafe { libc::pthread_getattr_np(libc::pthread_self(), &mut attr) } != 0 {
        return None;
    }
    let mut addr: *mut c_void = core::ptr::null_mut();
    let mut size = 0usize;
    let mut guard = 0usize;
    // SAFETY: `attr` was initialised by pthread_getattr_np; the out-pointers are valid.
    let ok = unsafe {
        libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0
            && libc::pthread_attr_getguardsize(&attr, &mut guard) == 0
    };
    // SAFETY: initialised above and destroyed once.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    if !ok || addr.is_null() {
        return None;
    }
    Some(ThreadStack {
        base: addr as usize,
        size,
        guard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_is_alive_and_positive() {
        let me = gettid();
        assert!(me > 0);
        assert!(thread_alive(me));
        yield_now();
    }

    #[test]
    fn this_stack_holds_a_local() {
        let local = 0u8;
        let s = stack().unwrap();
        let at = &raw const local as usize;
        assert!(s.base + s.guard <= at && at < s.base + s.size);
    }

    /// `involuntary_switches` is this thread's count, as /proc reports it: read between two
    /// reads of /proc, it lies between them (the count only grows).
    #[test]
    fn involuntary_switches_are_this_threads() {
        let from_proc = || {
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        for _ in 0..3 {
            let before = from_proc();
            let ours = involuntary_switches();
            let after = from_proc();
            assert!(before <= ours && ours <= after, "{before} {ours} {after}");
        }
    }

    extern "C" fn forget(_: *mut c_void) {}

    #[test]
    fn a_key_takes_a_value() {
        let key = key_create(forget).unwrap();
        // SAFETY: a key just made; `forget` accepts anything.
        unsafe { set_specific(key, core::ptr::dangling_mut()) }.unwrap();
    }
}
