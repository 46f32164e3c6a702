//! The allocators under comparison, in one list.
//!
//! Every allocator here is a unit struct implementing `GlobalAlloc`, so its path is both its
//! type and its value. [`with_allocators!`] hands the list to a macro of the caller's; the
//! runner builds [`ALLOCATORS`] from it and the criterion benches build their own groups, so
//! adding an allocator is one line in [`with_allocators!`]. Each workload is monomorphised per
//! allocator (no dynamic dispatch in the timed loops), and called directly, never through the
//! process's global allocator, which stays `System` for the runner's own bookkeeping.

use crate::workloads::{self, Outcome, Params, Workload};
use std::alloc::{GlobalAlloc, Layout};

/// Calls `$callback!` with every allocator as `("name", path::To::UnitStruct)`, in the order
/// the tables show them. The name `mimalloc` is the baseline of every ratio.
///
/// Add an allocator here (one line); it must be a unit struct implementing
/// `GlobalAlloc + Sync`.
#[macro_export]
macro_rules! with_allocators {
    ($callback:ident) => {
        $callback! {
            ("tessera", ::tessera::Tessera),
            ("mimalloc", ::mimalloc::MiMalloc),
            ("jemalloc", ::tikv_jemallocator::Jemalloc),
            ("system", ::std::alloc::System),
        }
    };
}

/// The name of the allocator every ratio is taken against.
pub const BASELINE: &str = "mimalloc";

/// One allocator as the runner sees it: a name and the workloads instantiated for it.
#[derive(Debug)]
pub struct Allocator {
    /// Short name used on the command line and in the tables.
    pub name: &'static str,
    /// Runs one workload with this allocator (in the calling process).
    pub run: fn(Workload, &Params) -> Outcome,
}

macro_rules! allocator_table {
    ($(($name:literal, $unit:path)),* $(,)?) => {
        /// Every allocator the runner knows, in table order.
        pub static ALLOCATORS: &[Allocator] = &[
            $(Allocator {
                name: $name,
                run: |workload, params| workloads::run(&CallBoundary($unit), workload, params),
            }),*
        ];
    };
}

with_allocators!(allocator_table);

/// An allocator behind a call that is never inlined, as a `#[global_allocator]` sits behind
/// the `__rust_alloc` symbols.
///
/// Without it a Rust allocator (Tessera, `System`'s thin wrapper) would be inlined into the
/// workloads' loops, which monomorphise per allocator, while the C allocators stay behind
/// their FFI call: a head start that no program using `#[global_allocator]` gets. With it,
/// every allocator pays the one call a real program pays, and the C ones their extra FFI hop,
/// as they do there too.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallBoundary<A>(pub A);

// SAFETY: every method forwards to `A`'s with the same arguments, so `A`'s guarantees hold.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CallBoundary<A> {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { self.0.alloc(layout) }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above, for `dealloc`.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above, for `alloc_zeroed`.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above, for `realloc`.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// Allocators measured only when `--allocators` names them: `tessera-noprof` is Tessera with
/// heap profiling off (`TESSERA_PROF_RATE=0`, set in its child before the workload runs;
/// see [`prepare_child`]), so that the sampling's cost shows beside `tessera`, which runs at
/// the default rate, in one run (issue #18).
/// `tessera-percpu` and `tessera-auto` are Tessera with `TESSERA_CACHE=percpu` or `auto`
/// (per-CPU caches, issue #19; set in the child before Tessera's first allocation, where it
/// reads the variable). `tessera-unhardened` is Tessera built with `--cfg
/// tessera_unhardened` (no free-list encoding or double-free checks, issue #15): its children
/// are a second build of this runner with that flag (`child::spawn`, `runner::run`).
pub static OPT_IN: &[Allocator] = &[
    Allocator {
        name: "tessera-noprof",
        run: |workload, params| workloads::run(&CallBoundary(::tessera::Tessera), workload, params),
    },
    Allocator {
        name: "tessera-percpu",
        run: |workload, params| workloads::run(&CallBoundary(::tessera::Tessera), workload, params),
    },
    Allocator {
        name: "tessera-auto",
        run: |workload, params| workloads::run(&CallBoundary(::tessera::Tessera), workload, params),
    },
    Allocator {
        name: "tessera-unhardened",
        run: |workload, params| workloads::run(&CallBoundary(::tessera::Tessera), workload, params),
    },
];

/// The allocator whose children run in the runner built without Tessera's hardening.
pub const UNHARDENED: &str = "tessera-unhardened";

/// Looks an allocator up by name (the default ones and [`OPT_IN`]).
pub fn find(name: &str) -> Option<&'static Allocator> {
    ALLOCATORS.iter().chain(OPT_IN).find(|a| a.name == name)
}

/// The names of the allocators a run measures by default, in table order.
pub fn names() -> Vec<&'static str> {
    ALLOCATORS.iter().map(|a| a.name).collect()
}

/// Every name `--allocators` takes: [`names`] and the [`OPT_IN`] ones.
pub fn all_names() -> Vec<&'static str> {
    ALLOCATORS.iter().chain(OPT_IN).map(|a| a.name).collect()
}

/// Whether `name` is Tessera in some configuration (its child reports Tessera's memory).
pub fn is_tessera(name: &str) -> bool {
    name.starts_with("tessera")
}

/// Sets a child process up for `name` before its workload runs: `tessera-noprof` turns heap
/// profiling off; `tessera-percpu` and `tessera-auto` set `TESSERA_CACHE`;
/// `tessera-unhardened` and `tessera` check that this build is the one they measure.
pub fn prepare_child(name: &str) {
    let cache = match name {
        "tessera-noprof" => {
            ::tessera::profile::set_rate(0);
            return;
        }
        UNHARDENED => {
            assert!(
                !::tessera::hardened(),
                "tessera-unhardened ran in a runner built with Tessera's hardening: its \
                 children must be the build in <target>/tessera-unhardened"
            );
            return;
        }
        "tessera" => {
            assert!(
                ::tessera::hardened(),
                "tessera ran in a runner built without Tessera's hardening"
            );
            return;
        }
        "tessera-percpu" => "percpu",
        "tessera-auto" => "auto",
        _ => return,
    };
    // SAFETY: the child has started no thread yet (the workload starts them), so nothing
    // reads the environment meanwhile; Tessera reads it at its first allocation, which
    // comes after this (the runner's own allocator is `System`).
    unsafe { std::env::set_var("TESSERA_CACHE", cache) };
}
