//! Guarded, lazily committed, pooled, growable coroutine stacks (DESIGN.md, "Coroutine
//! stacks"). Being filled by the stacks issue.
