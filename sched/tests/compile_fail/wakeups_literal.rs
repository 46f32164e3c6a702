// `Wakeups` is made by `select` alone: its field is private.
fn main() {
    let _ = tessera_sched::chan::select::Wakeups(None);
}
