//! Host-guest wire protocol and the Lambda Runtime API server.
