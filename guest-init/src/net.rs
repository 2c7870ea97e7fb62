//! Bringing up the loopback interface (the Runtime API listens on 127.0.0.1).

/// Sets `IFF_UP` on `lo`; the kernel then assigns 127.0.0.1/8 itself.
pub fn loopback_up() -> std::io::Result<()> {
    pid1::netif::set_up("lo")
}
