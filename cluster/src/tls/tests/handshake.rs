//! Successful links both ways, identities, protocol parameters, counters.

use std::sync::Arc;

use rustls::{CipherSuite, ProtocolVersion};

use super::super::{peer_identity, Counted, Identity, LinkStats, RefusalReason, Role, ALPN_H2};
use super::{client, handshake, round_trip, server, Pki};

/// The negotiated parameters of one end.
fn assert_parameters(conn: &rustls::CommonState) {
    let suite = conn.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(suite, CipherSuite::TLS13_AES_256_GCM_SHA384);
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(conn.alpn_protocol(), Some(ALPN_H2));
}

async fn link_ok(server_role: Role, server_id: &str, client_role: Role, client_id: &str) {
    let pki = Pki::new();
    let (acceptor, s_stats) = server(&pki.issue(server_role, server_id), client_role);
    let (connector, c_stats) = client(&pki.issue(client_role, client_id), server_role);

    let (s, c) = handshake(&acceptor, &s_stats, &connector, &c_stats).await;
    let (s, client_seen_by_server) = s.unwrap();
    let (c, server_seen_by_client) = c.unwrap();

    let expect_client = Identity::new(client_role, client_id).unwrap();
    let expect_server = Identity::new(server_role, server_id).unwrap();
    assert_eq!(client_seen_by_server, expect_client);
    assert_eq!(server_seen_by_client, expect_server);
    assert_eq!(peer_identity(s.get_ref().1), Some(expect_client));
    assert_eq!(peer_identity(c.get_ref().1), Some(expect_server));
    assert_parameters(s.get_ref().1);
    assert_parameters(c.get_ref().1);

    let mut s = Counted::new(s, s_stats.clone());
    let mut c = Counted::new(c, c_stats.clone());
    round_trip(&mut c, &mut s, b"ping over the link").await;
    round_trip(&mut s, &mut c, &[0x5a; 100_000]).await;

    for stats in [&s_stats, &c_stats] {
        assert_eq!(stats.handshakes(), 1);
        assert_eq!(stats.refusals_total(), 0);
        assert!(stats.handshake_micros_total() > 0);
        assert_eq!(stats.bytes_in(), 18 + 100_000);
        assert_eq!(stats.bytes_out(), 18 + 100_000);
    }
}

#[tokio::test]
async fn tls_frontend_dials_worker() {
    link_ok(Role::Worker, "worker-1", Role::Frontend, "fe.a_1").await;
}

#[tokio::test]
async fn tls_worker_dials_frontend() {
    link_ok(Role::Frontend, "fe-1", Role::Worker, "w.2").await;
}

#[test]
fn tls_roles_and_identities_parse() {
    assert_eq!("frontend".parse::<Role>().unwrap(), Role::Frontend);
    assert_eq!("worker".parse::<Role>().unwrap(), Role::Worker);
    assert!("Worker".parse::<Role>().is_err());
    assert_eq!(Role::Worker.to_string(), "worker");

    let id = Identity::new(Role::Worker, "w-1.a_b").unwrap();
    assert_eq!(id.uri(), "lambda-cluster://worker/w-1.a_b");
    assert_eq!(Identity::from_uri(&id.uri()).unwrap(), id);
    assert!(Identity::new(Role::Worker, &"a".repeat(64)).is_ok());
    for bad in ["", "a/b", "a b", "é", &"a".repeat(65)] {
        assert!(Identity::new(Role::Worker, bad).is_err(), "{bad:?}");
    }
    for bad in [
        "lambda-cluster://worker",
        "lambda-cluster://admin/x",
        "lambda-cluster://worker/a/b",
        "https://worker/x",
    ] {
        assert!(Identity::from_uri(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn tls_stats_render_prometheus() {
    let stats = Arc::new(LinkStats::new());
    stats.record_handshake(std::time::Duration::from_millis(3));
    stats.record_handshake(std::time::Duration::from_millis(5));
    stats.record_refusal(RefusalReason::WrongRole);
    stats.add_bytes_in(10);
    stats.add_bytes_out(7);
    let text = stats.render("lambda_frontend");
    for line in [
        "lambda_frontend_link_handshakes_total 2",
        "lambda_frontend_link_handshake_seconds_sum 0.008",
        "lambda_frontend_link_handshake_seconds_count 2",
        "lambda_frontend_link_handshake_seconds_max 0.005",
        "lambda_frontend_link_refusals_total{reason=\"wrong_role\"} 1",
        "lambda_frontend_link_refusals_total{reason=\"no_certificate\"} 0",
        "lambda_frontend_link_bytes_total{direction=\"in\"} 10",
        "lambda_frontend_link_bytes_total{direction=\"out\"} 7",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert_eq!(RefusalReason::NoCertificate.as_str(), "no_certificate");
    assert_eq!(RefusalReason::UnknownCa.as_str(), "unknown_ca");
    assert_eq!(RefusalReason::BadRecord.as_str(), "bad_record");
}
