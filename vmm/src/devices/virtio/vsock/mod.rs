//! virtio-vsock device with a Firecracker-compatible hybrid Unix-socket backend.
