//! A Go-style M:N scheduler (G/M/P) on Tessera stacks (DESIGN.md, "Scheduler").
//!
//! Nothing is implemented yet: the scheduler issue fills this crate once the allocator's
//! per-P hook and the stack pool exist.
