// The sealing token lives in a private module: it cannot be named.
use tessera_sched::chan::select::sealed::Internal;

fn main() {
    let _: Option<Internal> = None;
}
