//! Who a certificate speaks for: the role and id in its `lambda-cluster://` URI SAN.

use std::fmt;
use std::str::FromStr;

use rustls::CommonState;
use serde::{Deserialize, Serialize};

use super::TlsError;

/// The scheme of the URI SAN that carries a host's identity.
pub const IDENTITY_SCHEME: &str = "lambda-cluster";

/// Longest id accepted in an identity.
pub const MAX_ID_LEN: usize = 64;

/// The part a host plays in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes the Lambda API calls and dials workers.
    Frontend,
    /// Runs sandboxes and accepts links from frontends.
    Worker,
}

impl Role {
    /// `"frontend"` or `"worker"`, as in the URI SAN and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Frontend => "frontend",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "frontend" => Ok(Role::Frontend),
            "worker" => Ok(Role::Worker),
            other => Err(TlsError::BadIdentity(format!(
                "unknown role {other:?} (frontend or worker)"
            ))),
        }
    }
}

/// A host's identity: its role and its id (`[A-Za-z0-9._-]{1,64}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Frontend or worker.
    pub role: Role,
    /// The host's id within its role.
    pub id: String,
}

impl Identity {
    /// An identity with a checked id.
    pub fn new(role: Role, id: &str) -> Result<Self, TlsError> {
        check_id(id)?;
        Ok(Self {
            role,
            id: id.to_owned(),
        })
    }

    /// The URI SAN for this identity: `lambda-cluster://<role>/<id>`.
    pub fn uri(&self) -> String {
        format!("{IDENTITY_SCHEME}://{}/{}", self.role, self.id)
    }

    /// Parses `lambda-cluster://<role>/<id>`.
    pub fn from_uri(uri: &str) -> Result<Self, TlsError> {
        let rest = uri
            .strip_prefix(IDENTITY_SCHEME)
            .and_then(|r| r.strip_prefix("://"))
            .ok_or_else(|| {
                TlsError::BadIdentity(format!("{uri:?} is not a {IDENTITY_SCHEME} URI"))
            })?;
        let (role, id) = rest
            .split_once('/')
            .ok_or_else(|| TlsError::BadIdentity(format!("{uri:?} has no id")))?;
        Identity::new(role.parse()?, id)
    }

    /// The identity in an end-entity certificate: exactly one `lambda-cluster://` URI SAN.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| TlsError::BadIdentity(format!("unparsable certificate: {e}")))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| TlsError::BadIdentity(format!("bad subjectAltName: {e}")))?
            .ok_or_else(|| TlsError::BadIdentity("certificate has no subjectAltName".into()))?;
        let mut uris = san.value.general_names.iter().filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) if is_identity_uri(u) => Some(*u),
            _ => None,
        });
        let uri = uris.next().ok_or_else(|| {
            TlsError::BadIdentity(format!("no {IDENTITY_SCHEME}:// URI in subjectAltName"))
        })?;
        if uris.next().is_some() {
            return Err(TlsError::BadIdentity(format!(
                "more than one {IDENTITY_SCHEME}:// URI in subjectAltName"
            )));
        }
        Identity::from_uri(uri)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.id)
    }
}

fn is_identity_uri(uri: &str) -> bool {
    uri.strip_prefix(IDENTITY_SCHEME)
        .is_some_and(|r| r.starts_with("://"))
}

/// Checks an id against `[A-Za-z0-9._-]{1,64}`.
pub fn check_id(id: &str) -> Result<(), TlsError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(ok_char) {
        return Err(TlsError::BadIdentity(format!(
            "id {id:?} does not match [A-Za-z0-9._-]{{1,{MAX_ID_LEN}}}"
        )));
    }
    Ok(())
}

/// The identity of the peer of an established connection, from its end-entity certificate.
///
/// `None` before the handshake finished or when the certificate carries no valid identity
/// (the verifiers in this module refuse such peers, so after [`super::accept`] or
/// [`super::connect`] this is always `Some`).
pub fn peer_identity(conn: &CommonState) -> Option<Identity> {
    let end_entity = conn.peer_certificates()?.first()?;
    Identity::from_cert_der(end_entity).ok()
}
