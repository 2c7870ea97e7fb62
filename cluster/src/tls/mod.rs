//! Mutually authenticated TLS for links (being written).
