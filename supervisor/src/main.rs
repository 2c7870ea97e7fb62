//! The supervisor: Lambda-compatible control and data plane.

fn main() {
    eprintln!("supervisor: not yet implemented");
    std::process::exit(2);
}
