//! Refused handshakes, each counted once under its reason.

use std::sync::Arc;

use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use tokio_rustls::TlsConnector;

use super::super::config::{client_builder, finish_client, provider};
use super::super::{ca, LinkStats, RefusalReason, Role, TlsFiles};
use super::{assert_reason, client, handshake, server, ClientEnd, Pki};

/// The client end of a handshake the server refused: TLS 1.3 finishes the client first,
/// so its refusal shows as a failed first read (the server's alert).
async fn assert_client_learns_refusal(c: ClientEnd) {
    if let Ok((mut stream, _)) = c {
        let mut buf = [0u8; 1];
        let read = stream.read(&mut buf).await;
        assert!(
            read.is_err() || read.unwrap() == 0,
            "refused client could read"
        );
    }
}

/// Asserts that `stats` counted exactly one refusal, for `reason`.
fn assert_refused_once(stats: &LinkStats, reason: RefusalReason) {
    assert_eq!(
        stats.refusals(reason),
        1,
        "{reason}:\n{}",
        stats.render("t")
    );
    assert_eq!(stats.refusals_total(), 1, "{}", stats.render("t"));
    assert_eq!(stats.handshakes(), 0);
}

#[tokio::test]
async fn tls_client_without_certificate_is_refused() {
    let pki = Pki::new();
    let (acceptor, s_stats) = server(&pki.issue(Role::Worker, "w1"), Role::Frontend);
    // A client that trusts the CA but has no certificate to present.
    let files = pki.issue(Role::Frontend, "f1");
    let c_stats = Arc::new(LinkStats::new());
    let builder = client_builder(&files, Role::Worker, c_stats.clone(), provider()).unwrap();
    let connector = TlsConnector::from(Arc::new(finish_client(builder.with_no_client_auth())));

    let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    assert_reason(s, RefusalReason::NoCertificate);
    assert_refused_once(&s_stats, RefusalReason::NoCertificate);
    assert_client_learns_refusal(c).await;
}

#[tokio::test]
async fn tls_client_certificate_from_another_ca_is_refused() {
    let (pki, other) = (Pki::new(), Pki::new());
    let (acceptor, s_stats) = server(&pki.issue(Role::Worker, "w1"), Role::Frontend);
    let foreign = other.issue(Role::Frontend, "f1");
    let files = TlsFiles {
        ca_cert: pki.dir.join(ca::CA_CERT_FILE),
        ..foreign
    };
    let (connector, c_stats) = client(&files, Role::Worker);

    let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    assert_reason(s, RefusalReason::UnknownCa);
    assert_refused_once(&s_stats, RefusalReason::UnknownCa);
    assert_client_learns_refusal(c).await;
}

#[tokio::test]
async fn tls_server_certificate_from_another_ca_is_refused() {
    let (pki, other) = (Pki::new(), Pki::new());
    let foreign = other.issue(Role::Worker, "w1");
    let files = TlsFiles {
        ca_cert: pki.dir.join(ca::CA_CERT_FILE),
        ..foreign
    };
    let (acceptor, s_stats) = server(&files, Role::Frontend);
    let (connector, c_stats) = client(&pki.issue(Role::Frontend, "f1"), Role::Worker);

    let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    assert_reason(c, RefusalReason::UnknownCa);
    assert_refused_once(&c_stats, RefusalReason::UnknownCa);
    // The server learns it from the client's alert (unknown_ca), counted once there too.
    assert_reason(s, RefusalReason::UnknownCa);
    assert_refused_once(&s_stats, RefusalReason::UnknownCa);
}

#[tokio::test]
async fn tls_certificate_from_an_impostor_ca_of_the_same_name_is_refused() {
    let pki = Pki::new();
    let impostor = pki.impostor();
    let (acceptor, s_stats) = server(&pki.issue(Role::Worker, "w1"), Role::Frontend);
    let files = TlsFiles {
        ca_cert: pki.dir.join(ca::CA_CERT_FILE),
        ..impostor.issue(Role::Frontend, "f1")
    };
    let (connector, c_stats) = client(&files, Role::Worker);

    let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    assert_reason(s, RefusalReason::UnknownCa);
    assert_refused_once(&s_stats, RefusalReason::UnknownCa);
    assert_client_learns_refusal(c).await;
}

/// Issues a certificate that expired an hour ago.
fn issue_expired(pki: &Pki, role: Role, id: &str) -> TlsFiles {
    let now = OffsetDateTime::now_utc();
    let (from, to) = (now - time::Duration::DAY, now - time::Duration::HOUR);
    ca::issue_with_validity(&pki.dir, role, id, from, to, &pki.dir).unwrap();
    TlsFiles::in_dir(&pki.dir, role, id)
}

#[tokio::test]
async fn tls_expired_client_certificate_is_refused() {
    let pki = Pki::new();
    let (acceptor, s_stats) = server(&pki.issue(Role::Worker, "w1"), Role::Frontend);
    let (connector, c_stats) = client(&issue_expired(&pki, Role::Frontend, "f1"), Role::Worker);

    let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    assert_reason(s, RefusalReason::Expired);
    assert_refused_once(&s_stats, RefusalReason::Expired);
    assert_client_learns_refusal(c).await;
}

#[tokio::test]
async fn tls_expired_server_certificate_is_refused() {
    let pki = Pki::new();
    let (acceptor, s_stats) = server(&issue_expired(&pki, Role::Worker, "w1"), Role::Frontend);
    let (connector, c_stats) = client(&pki.issue(Role::Frontend, "f1"), Role::Worker);

    let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    assert_reason(c, RefusalReason::Expired);
    assert_refused_once(&c_stats, RefusalReason::Expired);
    assert_reason(s, RefusalReason::Expired);
}

#[tokio::test]
async fn tls_worker_posing_as_frontend_is_refused() {
    let pki = Pki::new();
    let (acceptor, s_stats) = server(&pki.issue(Role::Worker, "w1"), Role::Frontend);
    // A worker certificate where a frontend is expected.
    let (connector, c_stats) = client(&pki.issue(Role::Worker, "w2"), Role::Worker);

    let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    assert_reason(s, RefusalReason::WrongRole);
    assert_refused_once(&s_stats, RefusalReason::WrongRole);
    assert_client_learns_refusal(c).await;
}

#[tokio::test]
async fn tls_frontend_posing_as_worker_is_refused() {
    let pki = Pki::new();
    // The client dials expecting a worker and meets a frontend.
    let (acceptor, s_stats) = server(&pki.issue(Role::Frontend, "f1"), Role::Frontend);
    let (connector, c_stats) = client(&pki.issue(Role::Frontend, "f2"), Role::Worker);

    let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    assert_reason(c, RefusalReason::WrongRole);
    assert_refused_once(&c_stats, RefusalReason::WrongRole);
    // The client's access_denied alert, counted once on the server.
    assert_reason(s, RefusalReason::WrongRole);
    assert_refused_once(&s_stats, RefusalReason::WrongRole);
}

#[tokio::test]
async fn tls_certificate_without_a_valid_identity_is_refused() {
    let pki = Pki::new();
    let (acceptor, s_stats) = server(&pki.issue(Role::Worker, "w1"), Role::Frontend);
    let uri = |u: &str| rcgen::SanType::URI(u.try_into().unwrap());
    let dns = rcgen::SanType::DnsName("frontend.example".try_into().unwrap());
    let cases = [
        ("no-uri", vec![dns]),
        ("bad-id", vec![uri("lambda-cluster://frontend/a b")]),
        ("unknown-role", vec![uri("lambda-cluster://admin/a")]),
        (
            "two",
            vec![
                uri("lambda-cluster://frontend/a"),
                uri("lambda-cluster://frontend/b"),
            ],
        ),
    ];
    for (n, (name, sans)) in cases.into_iter().enumerate() {
        let (connector, c_stats) = client(&pki.issue_raw(name, sans), Role::Worker);
        let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
        assert_reason(s, RefusalReason::BadIdentity);
        assert_eq!(
            s_stats.refusals(RefusalReason::BadIdentity),
            n as u64 + 1,
            "{name}"
        );
        assert_eq!(s_stats.refusals_total(), n as u64 + 1, "{name}");
        assert_client_learns_refusal(c).await;
    }
}
