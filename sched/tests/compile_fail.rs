//! What safe code outside the crate must not be able to do with `select!`'s internals
//! (issue #14): call the methods of `chan::select::Arm` (some assume a channel lock held),
//! make a `Wakeups`, or name the sealing token. Each case must fail to compile; trybuild
//! checks the error against the `.stderr` beside it (rustc 1.95's wording).

#[test]
fn sealed_select_internals() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
