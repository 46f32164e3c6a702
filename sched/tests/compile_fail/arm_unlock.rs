#![allow(unreachable_code)]
// Unlocking a channel through a select arm: the method is unsafe (it assumes this thread
// holds the lock), and its `Internal` argument cannot be made outside the crate anyway.
use tessera_sched::chan::{self, select::Arm};

fn unlock_it(arm: &dyn Arm) {
    arm.unlock(panic!());
}

fn main() {
    let (_tx, rx) = chan::bounded::<i32>(0);
    unlock_it(&chan::select::recv_arm(&rx));
}
