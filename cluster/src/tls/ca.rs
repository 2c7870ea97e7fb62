//! The cluster CA: a directory holding `ca.pem`, `ca.key` (0600), `issued.json` and,
//! once something was revoked, `crl.pem`.
//!
//! Certificates: ECDSA P-384 keys, random 127-bit serials, a `lambda-cluster://<role>/<id>`
//! URI SAN, extended key usage serverAuth + clientAuth (either end of a link may use
//! them). Every file is written to a temporary name and renamed into place, so a process
//! reloading it sees the old or the new version, never a part. One operator at a time:
//! concurrent `issue` / `revoke` on the same directory may lose a record.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber, PKCS_ECDSA_P384_SHA384,
};
use time::OffsetDateTime;

use super::files::{io_err, write_atomic, KEY_MODE, PUBLIC_MODE};
use super::issued::{from_hex, to_hex, IssuedList};
pub use super::issued::{IssuedCert, ISSUED_FILE};
use super::{check_id, Identity, Role, TlsError};

/// File name of the CA certificate.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the certificate revocation list.
pub const CRL_FILE: &str = "crl.pem";

/// How long the CA certificate is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The `nextUpdate` of a CRL, counted from its writing. Informational: verifiers do not
/// refuse an older CRL, they keep using the newest one they have.
pub const CRL_NEXT_UPDATE: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far `not_before` is set back, for clocks a little behind the CA's.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// What [`issue`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedPaths {
    /// `<out_dir>/<role>-<id>.pem`.
    pub cert: PathBuf,
    /// `<out_dir>/<role>-<id>.key`, mode 0600.
    pub key: PathBuf,
    /// The certificate's serial number, lower-case hex.
    pub serial: String,
    /// End of the certificate's validity.
    pub not_after: OffsetDateTime,
}

/// File names of the certificate and key of an identity (`<role>-<id>.pem` / `.key`).
pub fn cert_file_names(role: Role, id: &str) -> (String, String) {
    (format!("{role}-{id}.pem"), format!("{role}-{id}.key"))
}

/// Creates a CA in `dir` (created if missing): `ca.pem` and `ca.key` (0600). Refuses
/// when either file exists already.
pub fn init(dir: &Path) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    for name in [CA_CERT_FILE, CA_KEY_FILE] {
        let path = dir.join(name);
        if path.exists() {
            return Err(TlsError::CaExists(path));
        }
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    // A name of its own, so certificates of another cluster's CA are not even candidates.
    let tag = to_hex(&random_serial()?.to_bytes()[..4]);
    params.distinguished_name = distinguished_name(&format!("lambda-cluster CA {tag}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + CA_LIFETIME;
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key)?;
    write_atomic(
        &dir.join(CA_KEY_FILE),
        key.serialize_pem().as_bytes(),
        KEY_MODE,
    )?;
    write_atomic(&dir.join(CA_CERT_FILE), cert.pem().as_bytes(), PUBLIC_MODE)
}

/// Issues a certificate for `role`/`id` valid from now (less [`CLOCK_SKEW`]) for
/// `lifetime`, signed by the CA in `dir`, written to `out_dir` (see [`IssuedPaths`]).
/// Replacing an existing pair renews it: processes using it pick the new one up.
pub fn issue(
    dir: &Path,
    role: Role,
    id: &str,
    lifetime: Duration,
    out_dir: &Path,
) -> Result<IssuedPaths, TlsError> {
    let now = OffsetDateTime::now_utc();
    issue_with_validity(dir, role, id, now - CLOCK_SKEW, now + lifetime, out_dir)
}

/// [`issue`] with explicit validity bounds (tests: expired or not yet valid certificates).
pub fn issue_with_validity(
    dir: &Path,
    role: Role,
    id: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    out_dir: &Path,
) -> Result<IssuedPaths, TlsError> {
    let identity = Identity::new(role, id)?;
    let issuer = load_issuer(dir)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
    let serial = random_serial()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&identity.to_string());
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(serial.clone());
    let cert = params.signed_by(&key, &issuer)?;

    // Record first: whatever reaches the disk can be revoked.
    let serial = to_hex(&serial.to_bytes());
    let mut list = IssuedList::load(dir)?;
    list.certs.push(IssuedCert {
        serial: serial.clone(),
        role,
        id: id.to_owned(),
        not_after: not_after.unix_timestamp(),
        revoked_at: None,
    });
    list.save(dir)?;

    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let (cert_name, key_name) = cert_file_names(role, id);
    let paths = IssuedPaths {
        cert: out_dir.join(cert_name),
        key: out_dir.join(key_name),
        serial,
        not_after,
    };
    write_atomic(&paths.key, key.serialize_pem().as_bytes(), KEY_MODE)?;
    write_atomic(&paths.cert, cert.pem().as_bytes(), PUBLIC_MODE)?;
    Ok(paths)
}

/// Revokes every certificate issued to `role`/`id` and rewrites `dir/crl.pem` (signed by
/// the CA, listing every revoked certificate not expired for more than a day). Returns
/// how many certificates this call revoked. Verifiers re-read the CRL for new handshakes.
pub fn revoke(dir: &Path, role: Role, id: &str) -> Result<usize, TlsError> {
    check_id(id)?;
    let issuer = load_issuer(dir)?;
    let mut list = IssuedList::load(dir)?;
    let now = OffsetDateTime::now_utc();
    let mut revoked = 0;
    for cert in &mut list.certs {
        if cert.role == role && cert.id == id && cert.revoked_at.is_none() {
            cert.revoked_at = Some(now.unix_timestamp());
            revoked += 1;
        }
    }
    list.crl_number += 1;
    let crl = crl_params(&list, now).signed_by(&issuer)?;
    list.save(dir)?;
    write_atomic(&dir.join(CRL_FILE), crl.pem()?.as_bytes(), PUBLIC_MODE)?;
    Ok(revoked)
}

/// The certificates the CA in `dir` issued, revoked or not.
pub fn issued(dir: &Path) -> Result<Vec<IssuedCert>, TlsError> {
    Ok(IssuedList::load(dir)?.certs)
}

fn crl_params(list: &IssuedList, now: OffsetDateTime) -> CertificateRevocationListParams {
    let keep_after = (now - time::Duration::DAY).unix_timestamp();
    let revoked_certs = list
        .certs
        .iter()
        .filter(|c| c.not_after > keep_after)
        .filter_map(|c| {
            let at = OffsetDateTime::from_unix_timestamp(c.revoked_at?).unwrap_or(now);
            Some(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&from_hex(&c.serial)?),
                revocation_time: at,
                reason_code: None,
                invalidity_date: None,
            })
        })
        .collect();
    CertificateRevocationListParams {
        this_update: now,
        next_update: now + CRL_NEXT_UPDATE,
        crl_number: SerialNumber::from_slice(&list.crl_number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    }
}

fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, TlsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).map_err(io_err(&path))
    };
    let key = KeyPair::from_pem(&read(CA_KEY_FILE)?)?;
    Ok(Issuer::from_ca_cert_pem(&read(CA_CERT_FILE)?, key)?)
}

pub(super) fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "lambda-cluster");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// 16 random bytes with the top bit clear (a positive INTEGER) and a non-zero first byte
/// (so the DER encoding is exactly these bytes).
fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|e| TlsError::Rustls(e.into()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}
