//! Worker side of the data plane: sandboxes on one host (pool, jail, backends).

pub mod jail;
