//! Measures boot-to-banner under QEMU TCG: wall time from starting QEMU until guest-init's
//! banner is on the console, and the guest's own kernel-start-to-init time from the
//! banner. Writes JSON to stdout (or the file given as the first argument).
//!
//!     cargo run -p integration-tests --bin tcg-boot-bench -- [OUT.json] [RUNS]

use std::time::Duration;

use integration_tests::images::Images;
use integration_tests::tcg::{TcgConfig, TcgVm};

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn guest_boot_seconds(serial: &str) -> Option<f64> {
    let banner = serial.lines().find(|l| l.starts_with("guest-init "))?;
    let value = banner.split("boot-to-init=").nth(1)?;
    value.trim_end_matches(" s").trim().parse().ok()
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let out = args.next();
    let runs: usize = match args.next() {
        Some(n) => n.parse().map_err(|e| format!("RUNS: {e}"))?,
        None => 5,
    };
    let images = Images::locate()?;
    let config = TcgConfig::new(images.bzimage(), images.rootfs("provided")?).cmdline("quiet");
    let mut wall_ms = Vec::new();
    let mut guest_ms = Vec::new();
    for run in 0..runs {
        let vm = TcgVm::spawn(&config)?;
        let started = std::time::Instant::now();
        if !vm.wait_for_serial(" ready: pid=1 ", Duration::from_secs(60)) {
            return Err(format!(
                "run {run}: no banner within 60 s:\n{}",
                vm.serial()
            ));
        }
        let wall = started.elapsed().as_secs_f64() * 1e3;
        let outcome = vm.wait(Duration::from_secs(30));
        let guest = guest_boot_seconds(&outcome.serial).ok_or("banner without boot-to-init")? * 1e3;
        eprintln!("run {run}: banner after {wall:.0} ms wall, guest boot-to-init {guest:.0} ms");
        wall_ms.push(wall);
        guest_ms.push(guest);
    }
    let json = format!(
        "{{\"runs\":{runs},\"boot_to_banner_wall_ms\":{{\"median\":{:.1},\"all\":{:?}}},\
         \"guest_kernel_start_to_init_ms\":{{\"median\":{:.1},\"all\":{:?}}}}}\n",
        median(&mut wall_ms.clone()),
        wall_ms.iter().map(|v| v.round()).collect::<Vec<_>>(),
        median(&mut guest_ms.clone()),
        guest_ms.iter().map(|v| v.round()).collect::<Vec<_>>(),
    );
    match out {
        Some(path) => std::fs::write(&path, &json).map_err(|e| format!("{path}: {e}"))?,
        None => print!("{json}"),
    }
    Ok(())
}
