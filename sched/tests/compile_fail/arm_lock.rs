// Even a safe `Arm` method takes an `Internal` token, which cannot be made outside the crate.
use tessera_sched::chan::{self, select::Arm};

fn main() {
    let (_tx, rx) = chan::bounded::<i32>(0);
    let arm = chan::select::recv_arm(&rx);
    arm.lock(Default::default());
}
