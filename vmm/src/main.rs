//! The microVM monitor binary. See `vmm --help`; exit codes are listed in `vmm::exit`.

use vmm::config::cli::{self, Command};
use vmm::exit::EXIT_CONFIG;

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("vmm: error: {msg}");
    std::process::exit(EXIT_CONFIG);
}

fn main() {
    vmm::logger::start_instant();
    let cfg = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            println!("{}", cli::USAGE);
            return;
        }
        Ok(Command::Version) => {
            println!("vmm {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Ok(Command::ProbeHost { kvm_fd }) => {
            vmm::logger::init(log::LevelFilter::Warn);
            match vmm::probe::host(kvm_fd) {
                Ok(json) => println!("{json}"),
                Err(e) => fail(e),
            }
            return;
        }
        Err(e) => fail(e),
    };
    vmm::logger::init(cfg.log_level);
    if let Err(e) = cfg.validate() {
        fail(e);
    }
    let pvm = vmm::pvm::warn_if_pvm();
    // Before any thread exists, so every thread inherits the blocked mask.
    let signal_fd = vmm::exit_watcher::block_exit_signals().unwrap_or_else(|e| fail(e));
    let vm = vmm::builder::build(&cfg, signal_fd, pvm).unwrap_or_else(|e| fail(e));
    match vmm::runner::run(vm, cfg.seccomp) {
        Ok(reason) => std::process::exit(reason.code()),
        Err(e) => fail(e),
    }
}
