//! The comparison runner (the main job). Being filled by the runner issue.
fn main() {
    eprintln!("tessera-bench: the comparison runner is not written yet");
    std::process::exit(2);
}
