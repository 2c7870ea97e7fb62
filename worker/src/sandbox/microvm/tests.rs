use super::*;

#[test]
fn reads_the_start_reports_of_vmm_and_guest() {
    let vmm = "[vmm 0.2 INFO vcpu0] first KVM_RUN: wall_since_main_us=243427 process_cpu_us=1\n";
    let serial = "[ 1.0] x\nguest-init 0.1.0 ready: pid=1 boot-to-init=1.780 s\n";
    assert_eq!(start_stages(vmm, serial), (Some(243_427), Some(1.78)));
    assert_eq!(start_stages("", "nothing"), (None, None));
}

#[test]
fn reads_the_peak_resident_set_of_a_process() {
    let status = "Name:\tvmm\nVmPeak:\t  300000 kB\nVmHWM:\t   52340 kB\nVmRSS:\t   50000 kB\n";
    assert_eq!(parse_vm_hwm(status), Some(52_340 << 10));
    assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    // This test process has a resident set.
    assert!(peak_resident_bytes(std::process::id() as i32).unwrap() > 0);
}
