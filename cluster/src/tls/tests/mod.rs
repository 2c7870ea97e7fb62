//! Real handshakes over TCP loopback: shared set-up.

mod ca_files;
mod handshake;
mod record;
mod refusal;
mod reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use super::{
    accept, ca, client_config, connect, server_config, Identity, LinkStats, Refusal, Role,
    TlsFiles, DEFAULT_CERT_LIFETIME, RELOAD_CHECK_INTERVAL,
};

pub(super) type ServerEnd = Result<(server::TlsStream<TcpStream>, Identity), Refusal>;
pub(super) type ClientEnd = Result<(client::TlsStream<TcpStream>, Identity), Refusal>;

/// A CA in a temporary directory; certificates are issued into the CA directory, so
/// [`TlsFiles::in_dir`] finds everything.
pub(super) struct Pki {
    _tmp: tempfile::TempDir,
    pub(super) dir: PathBuf,
}

impl Pki {
    pub(super) fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        ca::init(&dir).unwrap();
        Self { _tmp: tmp, dir }
    }

    /// Another CA with the same name as this one's but its own key.
    pub(super) fn impostor(&self) -> Self {
        let pem = std::fs::read(self.dir.join(ca::CA_CERT_FILE)).unwrap();
        let der: rustls::pki_types::CertificateDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
        let (_, real) = x509_parser::parse_x509_certificate(&der).unwrap();
        let name = real
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = ca::distinguished_name(name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(ca::CA_KEY_FILE), key.serialize_pem()).unwrap();
        std::fs::write(dir.join(ca::CA_CERT_FILE), cert.pem()).unwrap();
        Self { _tmp: tmp, dir }
    }

    /// A certificate from this CA with the given SANs and nothing checked, as `<name>.pem`.
    pub(super) fn issue_raw(&self, name: &str, sans: Vec<rcgen::SanType>) -> TlsFiles {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap();
        let ca_key = rcgen::KeyPair::from_pem(&read(ca::CA_KEY_FILE)).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&read(ca::CA_CERT_FILE), ca_key).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).unwrap();
        let files = TlsFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
            ..TlsFiles::in_dir(&self.dir, Role::Worker, "unused")
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    pub(super) fn issue(&self, role: Role, id: &str) -> TlsFiles {
        ca::issue(&self.dir, role, id, DEFAULT_CERT_LIFETIME, &self.dir).unwrap();
        TlsFiles::in_dir(&self.dir, role, id)
    }
}

/// A listener side expecting `peer` clients.
pub(super) fn server(files: &TlsFiles, peer: Role) -> (TlsAcceptor, Arc<LinkStats>) {
    let stats = Arc::new(LinkStats::new());
    let config = server_config(files, peer, stats.clone()).unwrap();
    (TlsAcceptor::from(config), stats)
}

/// A dialling side expecting a `peer` server.
pub(super) fn client(files: &TlsFiles, peer: Role) -> (TlsConnector, Arc<LinkStats>) {
    let stats = Arc::new(LinkStats::new());
    let config = client_config(files, peer, stats.clone()).unwrap();
    (TlsConnector::from(config), stats)
}

/// Runs both ends of one handshake on a fresh loopback listener.
pub(super) async fn handshake(
    acceptor: &TlsAcceptor,
    server_stats: &LinkStats,
    connector: &TlsConnector,
    client_stats: &LinkStats,
) -> (ServerEnd, ClientEnd) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    handshake_via(
        &listener,
        addr,
        acceptor,
        server_stats,
        connector,
        client_stats,
    )
    .await
}

/// [`handshake`] with the client dialling `dial` (the listener or a proxy in front of it).
pub(super) async fn handshake_via(
    listener: &TcpListener,
    dial: SocketAddr,
    acceptor: &TlsAcceptor,
    server_stats: &LinkStats,
    connector: &TlsConnector,
    client_stats: &LinkStats,
) -> (ServerEnd, ClientEnd) {
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(acceptor, tcp, server_stats).await
    };
    let client = async {
        let tcp = TcpStream::connect(dial).await.unwrap();
        connect(connector, tcp, client_stats).await
    };
    tokio::join!(server, client)
}

/// The serial number (hex) of the peer's end-entity certificate.
pub(super) fn peer_serial(conn: &rustls::CommonState) -> String {
    let der = &conn.peer_certificates().unwrap()[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    super::issued::to_hex(cert.raw_serial())
}

/// Sends `msg` one way and back the other way, over established streams.
pub(super) async fn round_trip<A, B>(a: &mut A, b: &mut B, msg: &[u8])
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; msg.len()];
    a.write_all(msg).await.unwrap();
    a.flush().await.unwrap();
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
    b.write_all(msg).await.unwrap();
    b.flush().await.unwrap();
    a.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
}

/// Long enough for reloading to look at the files again.
pub(super) async fn wait_for_reload() {
    tokio::time::sleep(RELOAD_CHECK_INTERVAL + Duration::from_millis(100)).await;
}

/// A TCP proxy for one connection to `upstream`: bytes from the server pass unchanged;
/// from the client, records pass whole, and once `armed` is set the next application-data
/// record gets one byte of its ciphertext flipped.
pub(super) async fn tamper_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let arm = armed.clone();
    tokio::spawn(async move {
        let (down, _) = listener.accept().await.unwrap();
        let up = TcpStream::connect(upstream).await.unwrap();
        let (mut down_read, mut down_write) = down.into_split();
        let (mut up_read, mut up_write) = up.into_split();
        tokio::spawn(async move { tokio::io::copy(&mut up_read, &mut down_write).await });
        loop {
            let mut header = [0u8; 5];
            if down_read.read_exact(&mut header).await.is_err() {
                break;
            }
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            let mut body = vec![0u8; len];
            if down_read.read_exact(&mut body).await.is_err() {
                break;
            }
            if header[0] == 23 && !body.is_empty() && arm.swap(false, Ordering::SeqCst) {
                body[len / 2] ^= 0x01;
            }
            if up_write.write_all(&header).await.is_err()
                || up_write.write_all(&body).await.is_err()
            {
                break;
            }
        }
    });
    (addr, armed)
}

/// Asserts that a handshake end failed for `reason`.
pub(super) fn assert_reason<T: std::fmt::Debug>(
    end: Result<T, Refusal>,
    reason: super::RefusalReason,
) {
    match end {
        Err(refusal) => assert_eq!(refusal.reason, reason, "{refusal:?}"),
        Ok(ok) => panic!("expected a {reason} refusal, got {ok:?}"),
    }
}
