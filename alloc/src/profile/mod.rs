//! Heap profiles in pprof's format (issue #18), written without allocating through the
//! allocator being profiled.
//!
//! The encoder side:
//! - [`buf`]: byte buffers and tables in anonymous OS memory ([`buf::OsBuf`], [`buf::OsVec`]).
//! - [`proto`]: the protobuf wire format, write side.
//! - [`pprof`]: [`pprof::ProfileBuilder`], which turns samples into `profile.proto`.
//! - [`mappings`]: the loaded objects and their build IDs, via `dl_iterate_phdr`.
//! - [`gzip`]: gzip and DEFLATE, since pprof files are gzipped.

pub mod buf;
pub mod gzip;
pub mod mappings;
pub mod pprof;
pub mod proto;
