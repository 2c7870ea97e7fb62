//! Attaching a file to a free loop device, read-only and cleared automatically when
//! its last user (the mount) goes, so a crashed worker leaves no device behind once
//! its mounts are gone. The ioctls and `loop_info64` are the kernel's `linux/loop.h`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Another process may take the device `LOOP_CTL_GET_FREE` named before we bind it.
const ATTEMPTS: usize = 16;

/// `struct loop_info64` of `linux/loop.h`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// A loop device bound to a file; the device clears itself once nothing (this handle,
/// a mount) holds it.
pub struct LoopDevice {
    pub path: PathBuf,
    _device: File,
}

/// Binds `backing` (opened read-only) to a free loop device.
pub fn attach_read_only(backing: &File) -> io::Result<LoopDevice> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    let mut last = io::Error::other("no free loop device");
    for _ in 0..ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and only returns a number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let device = OpenOptions::new().read(true).open(&path)?;
        // SAFETY: LOOP_SET_FD takes a descriptor by value; `backing` outlives the call
        // and the kernel takes its own reference to the file.
        let bound = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) };
        if bound < 0 {
            last = io::Error::last_os_error();
            if last.raw_os_error() == Some(libc::EBUSY) {
                continue;
            }
            return Err(last);
        }
        set_flags(&device)?;
        return Ok(LoopDevice {
            path,
            _device: device,
        });
    }
    Err(last)
}

fn set_flags(device: &File) -> io::Result<()> {
    let info = LoopInfo64 {
        device: 0,
        inode: 0,
        rdevice: 0,
        offset: 0,
        sizelimit: 0,
        number: 0,
        encrypt_type: 0,
        encrypt_key_size: 0,
        flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
        file_name: [0; 64],
        crypt_name: [0; 64],
        encrypt_key: [0; 32],
        init: [0; 2],
    };
    // SAFETY: LOOP_SET_STATUS64 reads one `loop_info64`, which `info` is (repr(C),
    // the kernel's layout), alive for the call.
    let r = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_SET_STATUS64, &info) };
    if r < 0 {
        let err = io::Error::last_os_error();
        // SAFETY: LOOP_CLR_FD takes no argument; it unbinds the file bound above.
        unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CLR_FD) };
        return Err(err);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loop_info_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<super::LoopInfo64>(), 232);
    }
}
