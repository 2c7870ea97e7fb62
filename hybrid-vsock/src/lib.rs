//! Host side of Firecracker-style hybrid vsock: CONNECT handshake client and `<uds>_<port>` listeners.
