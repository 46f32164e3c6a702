//! `libtessera.so`: the C malloc family backed by Tessera, for `LD_PRELOAD`. Being filled by
//! the C replacement issue; until then this library exports nothing.
