//! OS memory, aligned arenas, the page heap of spans and the page map behind Tessera
//! (DESIGN.md, "The allocation path", steps 4–5).

pub mod os;
