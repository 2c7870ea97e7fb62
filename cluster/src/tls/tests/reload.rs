//! Revocation and renewal picked up by new handshakes while established links go on.

use super::super::{ca, RefusalReason, Role, TlsFiles, DEFAULT_CERT_LIFETIME};
use super::{
    assert_reason, client, handshake, peer_serial, round_trip, server, wait_for_reload, Pki,
};

#[tokio::test]
async fn tls_revoked_client_is_refused_while_established_link_works() {
    let pki = Pki::new();
    let (acceptor, s_stats) = server(&pki.issue(Role::Worker, "w1"), Role::Frontend);
    let (connector, c_stats) = client(&pki.issue(Role::Frontend, "f1"), Role::Worker);
    let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    let (mut s, _) = s.unwrap();
    let (mut c, _) = c.unwrap();
    round_trip(&mut c, &mut s, b"before").await;

    assert_eq!(ca::revoke(&pki.dir, Role::Frontend, "f1").unwrap(), 1);
    wait_for_reload().await;

    let (s2, _c2) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    assert_reason(s2, RefusalReason::Revoked);
    assert_eq!(s_stats.refusals(RefusalReason::Revoked), 1);
    assert_eq!(s_stats.refusals_total(), 1);
    round_trip(&mut c, &mut s, b"after the revocation").await;

    // With a CRL in place, a certificate not on it is still welcome (its status is known).
    let (other, o_stats) = client(&pki.issue(Role::Frontend, "f2"), Role::Worker);
    let (s3, c3) = handshake(&acceptor, &s_stats, &other, &o_stats).await;
    let (mut s3, _) = s3.unwrap();
    let (mut c3, _) = c3.unwrap();
    round_trip(&mut c3, &mut s3, b"f2").await;
    assert_eq!(s_stats.handshakes(), 2);
    assert_eq!(s_stats.refusals_total(), 1);
}

#[tokio::test]
async fn tls_revoked_server_is_refused() {
    let pki = Pki::new();
    let (acceptor, s_stats) = server(&pki.issue(Role::Worker, "w1"), Role::Frontend);
    let (connector, c_stats) = client(&pki.issue(Role::Frontend, "f1"), Role::Worker);
    let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    let (mut s, _) = s.unwrap();
    let (mut c, _) = c.unwrap();

    assert_eq!(ca::revoke(&pki.dir, Role::Worker, "w1").unwrap(), 1);
    assert_eq!(ca::revoke(&pki.dir, Role::Worker, "w1").unwrap(), 0);
    wait_for_reload().await;

    let (s2, c2) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    assert_reason(c2, RefusalReason::Revoked);
    assert_eq!(c_stats.refusals(RefusalReason::Revoked), 1);
    assert_eq!(c_stats.refusals_total(), 1);
    // The server learns it from the certificate_revoked alert.
    assert_reason(s2, RefusalReason::Revoked);
    assert_eq!(s_stats.refusals_total(), 1);
    round_trip(&mut s, &mut c, b"still here").await;
}

#[tokio::test]
async fn tls_renewed_certificates_serve_new_handshakes_old_link_continues() {
    let pki = Pki::new();
    let lifetime = DEFAULT_CERT_LIFETIME;
    let w1 = ca::issue(&pki.dir, Role::Worker, "w1", lifetime, &pki.dir).unwrap();
    let f1 = ca::issue(&pki.dir, Role::Frontend, "f1", lifetime, &pki.dir).unwrap();
    let (acceptor, s_stats) = server(
        &TlsFiles::in_dir(&pki.dir, Role::Worker, "w1"),
        Role::Frontend,
    );
    let (connector, c_stats) = client(
        &TlsFiles::in_dir(&pki.dir, Role::Frontend, "f1"),
        Role::Worker,
    );

    let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    let (mut s, _) = s.unwrap();
    let (mut c, _) = c.unwrap();
    assert_eq!(peer_serial(c.get_ref().1), w1.serial);
    assert_eq!(peer_serial(s.get_ref().1), f1.serial);

    let w2 = ca::issue(&pki.dir, Role::Worker, "w1", lifetime, &pki.dir).unwrap();
    let f2 = ca::issue(&pki.dir, Role::Frontend, "f1", lifetime, &pki.dir).unwrap();
    assert_eq!(
        (w2.cert.clone(), w2.key.clone()),
        (w1.cert.clone(), w1.key.clone())
    );
    assert_ne!(w2.serial, w1.serial);
    assert_ne!(f2.serial, f1.serial);
    wait_for_reload().await;

    let (s2, c2) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    let (mut s2, _) = s2.unwrap();
    let (mut c2, _) = c2.unwrap();
    assert_eq!(peer_serial(c2.get_ref().1), w2.serial);
    assert_eq!(peer_serial(s2.get_ref().1), f2.serial);

    round_trip(&mut c, &mut s, b"old link").await;
    round_trip(&mut c2, &mut s2, b"new link").await;
    assert_eq!((s_stats.handshakes(), c_stats.handshakes()), (2, 2));
}

#[tokio::test]
async fn tls_unloadable_renewal_keeps_the_current_certificate() {
    let pki = Pki::new();
    let w1 = ca::issue(
        &pki.dir,
        Role::Worker,
        "w1",
        DEFAULT_CERT_LIFETIME,
        &pki.dir,
    )
    .unwrap();
    let (acceptor, s_stats) = server(
        &TlsFiles::in_dir(&pki.dir, Role::Worker, "w1"),
        Role::Frontend,
    );
    let (connector, c_stats) = client(&pki.issue(Role::Frontend, "f1"), Role::Worker);

    std::fs::write(&w1.cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    wait_for_reload().await;
    let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    let (mut s, _) = s.unwrap();
    let (mut c, _) = c.unwrap();
    assert_eq!(peer_serial(c.get_ref().1), w1.serial);
    round_trip(&mut c, &mut s, b"served by the previous pair").await;

    assert_eq!(s_stats.refusals_total() + c_stats.refusals_total(), 0);
}

#[tokio::test]
async fn tls_unloadable_crl_keeps_the_current_crl() {
    let pki = Pki::new();
    let (acceptor, s_stats) = server(&pki.issue(Role::Worker, "w1"), Role::Frontend);
    let (good, g_stats) = client(&pki.issue(Role::Frontend, "f1"), Role::Worker);
    let (gone, x_stats) = client(&pki.issue(Role::Frontend, "gone"), Role::Worker);
    assert_eq!(ca::revoke(&pki.dir, Role::Frontend, "gone").unwrap(), 1);
    wait_for_reload().await;
    let (s, _) = handshake(&acceptor, &s_stats, &gone, &x_stats).await;
    assert_reason(s, RefusalReason::Revoked);

    let bad_crl = "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n";
    std::fs::write(pki.dir.join(ca::CRL_FILE), bad_crl).unwrap();
    wait_for_reload().await;
    let (s, _) = handshake(&acceptor, &s_stats, &gone, &x_stats).await;
    assert_reason(s, RefusalReason::Revoked);
    let (s, c) = handshake(&acceptor, &s_stats, &good, &g_stats).await;
    assert!(s.is_ok() && c.is_ok());
    assert_eq!(s_stats.refusals(RefusalReason::Revoked), 2);
    assert_eq!(s_stats.refusals_total(), 2);
}
