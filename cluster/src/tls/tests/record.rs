//! A record tampered with on the wire after the handshake.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::super::link::rustls_error;
use super::super::{Counted, RefusalReason, Role};
use super::{client, handshake_via, round_trip, server, tamper_proxy, Pki};

#[tokio::test]
async fn tls_tampered_record_fails_the_read_and_counts_bad_record() {
    let pki = Pki::new();
    let (acceptor, s_stats) = server(&pki.issue(Role::Worker, "w1"), Role::Frontend);
    let (connector, c_stats) = client(&pki.issue(Role::Frontend, "f1"), Role::Worker);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (proxy, armed) = tamper_proxy(listener.local_addr().unwrap()).await;

    let (s, c) = handshake_via(&listener, proxy, &acceptor, &s_stats, &connector, &c_stats).await;
    let mut s = Counted::new(s.unwrap().0, s_stats.clone());
    let mut c = Counted::new(c.unwrap().0, c_stats.clone());
    round_trip(&mut c, &mut s, b"through the proxy").await;

    armed.store(true, Ordering::SeqCst);
    c.write_all(b"this record gets one bit flipped")
        .await
        .unwrap();
    c.flush().await.unwrap();
    let mut buf = [0u8; 64];
    let err = s.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        matches!(rustls_error(&err), Some(rustls::Error::DecryptError)),
        "{err:?}"
    );
    assert_eq!(s_stats.refusals(RefusalReason::BadRecord), 1);
    // Reading on after the failure fails at once and does not count it again.
    let again = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert_eq!(
        again.unwrap().unwrap_err().kind(),
        std::io::ErrorKind::InvalidData
    );
    assert_eq!(s_stats.refusals(RefusalReason::BadRecord), 1);
    assert_eq!(s_stats.refusals_total(), 1);

    // The sender hears bad_record_mac; that is the receiver's finding, not counted here.
    let read = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
    let read = read.unwrap().unwrap_err();
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac);
    assert_eq!(rustls_error(&read), Some(&alert), "{read:?}");
    assert_eq!(c_stats.refusals_total(), 0);
}
