// `Wakeups` is made by `select` alone: no `Default`.
fn main() {
    let _ = tessera_sched::chan::select::Wakeups::default();
}
