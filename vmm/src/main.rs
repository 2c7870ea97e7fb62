//! The microVM monitor.

fn main() {
    eprintln!("vmm: not yet implemented");
    std::process::exit(2);
}
