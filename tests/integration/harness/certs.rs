//! Test PKI made fresh in each test with `rcgen`: a [`TestCa`] issues server
//! certificates ([`Leaf`]) for DNS names and IP addresses, and writes PEM files the
//! gateway, redis-server and the TLS upstreams load. [`https_client`] is a client that
//! trusts exactly one test CA (no system roots), so a successful request proves the
//! peer's certificate chains to that CA and names the host.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use reqwest::blocking::Client;
use tokio_rustls::rustls;

/// A certificate authority that exists only for one test.
pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A server certificate and its private key, PEM.
pub(crate) struct Leaf {
    /// The certificate.
    pub(crate) cert_pem: String,
    /// The private key (PKCS#8).
    pub(crate) key_pem: String,
}

impl TestCa {
    /// A new CA with `name` as its common name.
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM.
    pub(crate) fn pem(&self) -> &str {
        &self.pem
    }

    /// Writes the CA certificate to `dir/name` and returns the path.
    pub(crate) fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).expect("write CA");
        path
    }

    /// A server certificate for `names` (DNS names or IP addresses, as subject
    /// alternative names), signed by this CA.
    pub(crate) fn issue(&self, names: &[&str]) -> Leaf {
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|n| (*n).to_owned())
                .collect::<Vec<String>>(),
        )
        .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Leaf {
    /// Writes `dir/<stem>.crt` and `dir/<stem>.key` and returns their paths.
    pub(crate) fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    /// The parsed chain and key.
    pub(crate) fn certified_key(&self) -> rustls::sign::CertifiedKey {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("parse cert PEM");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("parse key PEM");
        let signing = provider()
            .key_provider
            .load_private_key(key)
            .expect("usable key");
        rustls::sign::CertifiedKey::new(chain, signing)
    }
}

/// A certificate resolver that records the SNI name of every handshake.
#[derive(Debug)]
pub(crate) struct Resolver {
    key: Arc<rustls::sign::CertifiedKey>,
    /// Every SNI name seen (`""` when the client sent none).
    pub(crate) seen: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Resolver {
    /// A resolver serving `leaf`.
    pub(crate) fn new(leaf: &Leaf) -> Self {
        Resolver {
            key: Arc::new(leaf.certified_key()),
            seen: Arc::default(),
        }
    }
}

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.seen
            .lock()
            .push(hello.server_name().unwrap_or_default().to_owned());
        Some(self.key.clone())
    }
}

/// A rustls server config (HTTP/1.1 ALPN) that resolves certificates with `resolver`.
pub(crate) fn server_config_with(resolver: Arc<Resolver>) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// A blocking client that trusts only `ca_pem` (no system roots) and resolves `host` to
/// `addr`: `https://{host}:{port}/...` then reaches `addr` and verifies its certificate
/// for `host`. No redirects, no connection reuse, 10 s timeout.
pub(crate) fn https_client(ca_pem: &str, host: &str, addr: SocketAddr) -> Client {
    Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM"))
        .resolve(host, addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("https client")
}
