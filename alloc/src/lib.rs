//! Tessera: a size-classed, thread-caching global allocator.
