//! Which part of the system this appliance runs (`lambda.role=`): the whole of it on
//! one host (the default), the frontend of a cluster, or one of its worker hosts.

use std::str::FromStr;

/// Where a frontend or a worker finds the cluster CA, its certificate and key and the
/// CRL, on the data disk (what `supervisor cluster issue --out` wrote for this node).
pub const CLUSTER_DIR: &str = "cluster";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// `supervisor serve`: API, registry and sandboxes in one process, no links.
    #[default]
    Embedded,
    /// `supervisor serve --role frontend`: API, registry, code store and placement;
    /// the sandboxes run on the workers named with `--worker` in `lambda.serve`.
    Frontend,
    /// `supervisor worker`: the sandbox pool, reached by frontends over the link.
    Worker,
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "embedded" => Ok(Self::Embedded),
            "frontend" => Ok(Self::Frontend),
            "worker" => Ok(Self::Worker),
            _ => Err("expected embedded, frontend or worker".into()),
        }
    }
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Frontend => "frontend",
            Self::Worker => "worker",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_roles_and_nothing_else() {
        assert_eq!("worker".parse(), Ok(Role::Worker));
        assert_eq!("frontend".parse(), Ok(Role::Frontend));
        assert_eq!("embedded".parse(), Ok(Role::Embedded));
        assert!("Worker".parse::<Role>().is_err());
        for r in [Role::Embedded, Role::Frontend, Role::Worker] {
            assert_eq!(r.as_str().parse(), Ok(r));
        }
        assert_eq!(Role::default(), Role::Embedded);
    }
}
