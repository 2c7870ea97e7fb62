//! The registries a supervisor may pull from, and how it logs in to each. An image URI
//! naming any other host is refused before a connection is made: a function author
//! must not be able to point the host at an arbitrary address.

use std::fmt;

/// How to log in to one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    Basic { username: String, password: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, ..)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// `host[:port]` exactly as image URIs name it.
    pub host: String,
    /// Plain HTTP instead of HTTPS (a registry on loopback or a private network).
    pub plain_http: bool,
    pub credentials: Credentials,
}

impl Registry {
    pub(crate) fn auth(&self) -> oci_client::secrets::RegistryAuth {
        match &self.credentials {
            Credentials::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone())
            }
        }
    }
}
