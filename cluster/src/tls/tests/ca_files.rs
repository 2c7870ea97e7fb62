//! The CA directory: files, modes, records, the CRL.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use super::super::{ca, Identity, Role, TlsError, TlsFiles, DEFAULT_CERT_LIFETIME};
use super::Pki;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn tls_ca_init_writes_private_key_and_refuses_to_overwrite() {
    let pki = Pki::new();
    assert_eq!(mode(&pki.dir.join(ca::CA_KEY_FILE)), 0o600);
    let before = std::fs::read(pki.dir.join(ca::CA_KEY_FILE)).unwrap();
    assert!(matches!(ca::init(&pki.dir), Err(TlsError::CaExists(_))));
    assert_eq!(
        std::fs::read(pki.dir.join(ca::CA_KEY_FILE)).unwrap(),
        before
    );
}

#[test]
fn tls_ca_issue_writes_the_in_dir_layout_and_records_serials() {
    let pki = Pki::new();
    let out = pki.dir.join("out");
    let issued = ca::issue(&pki.dir, Role::Worker, "w-7", DEFAULT_CERT_LIFETIME, &out).unwrap();
    let files = TlsFiles::in_dir(&out, Role::Worker, "w-7");
    assert_eq!(
        (issued.cert.as_path(), issued.key.as_path()),
        (files.cert.as_path(), files.key.as_path())
    );
    assert_eq!(files.cert, out.join("worker-w-7.pem"));
    assert_eq!(mode(&issued.key), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");

    let pem = std::fs::read(&issued.cert).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
        .map(|d: rustls_pki_types::CertificateDer<'static>| d)
        .unwrap();
    assert_eq!(
        Identity::from_cert_der(&der).unwrap(),
        Identity::new(Role::Worker, "w-7").unwrap()
    );

    let records = ca::issued(&pki.dir).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            records[0].serial.as_str(),
            records[0].role,
            records[0].id.as_str()
        ),
        (issued.serial.as_str(), Role::Worker, "w-7")
    );
    assert_eq!(records[0].not_after, issued.not_after.unix_timestamp());
    assert!(matches!(
        ca::issue(&pki.dir, Role::Worker, "a/b", DEFAULT_CERT_LIFETIME, &out),
        Err(TlsError::BadIdentity(_))
    ));
}

#[test]
fn tls_ca_revoke_writes_a_signed_crl_with_every_certificate_of_the_identity() {
    let pki = Pki::new();
    let a = ca::issue(
        &pki.dir,
        Role::Frontend,
        "f1",
        DEFAULT_CERT_LIFETIME,
        &pki.dir,
    )
    .unwrap();
    let b = ca::issue(
        &pki.dir,
        Role::Frontend,
        "f1",
        DEFAULT_CERT_LIFETIME,
        &pki.dir,
    )
    .unwrap();
    let other = ca::issue(
        &pki.dir,
        Role::Worker,
        "f1",
        DEFAULT_CERT_LIFETIME,
        &pki.dir,
    )
    .unwrap();
    assert_eq!(ca::revoke(&pki.dir, Role::Frontend, "f1").unwrap(), 2);

    let pem = std::fs::read(pki.dir.join(ca::CRL_FILE)).unwrap();
    let der: rustls_pki_types::CertificateRevocationListDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    let serials: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| super::super::issued::to_hex(r.raw_serial()))
        .collect();
    assert_eq!(serials.len(), 2);
    assert!(serials.contains(&a.serial) && serials.contains(&b.serial));
    assert!(!serials.contains(&other.serial));

    let ca_pem = std::fs::read(pki.dir.join(ca::CA_CERT_FILE)).unwrap();
    let ca_der: rustls_pki_types::CertificateDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(&ca_pem).unwrap();
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    crl.verify_signature(ca_cert.public_key()).unwrap();
    assert_eq!(
        crl.crl_number().map(|n| n.to_string()),
        Some("1".to_owned())
    );
}
