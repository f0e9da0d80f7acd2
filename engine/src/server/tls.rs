//! TLS material of a server: a certificate a deployment provides, or a self-signed one created in
//! the data directory on first start (clients then verify the server against that certificate).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a data directory keeps its self-signed certificate and key.
pub const CERT_FILE: &str = "tls/cert.pem";
pub const KEY_FILE: &str = "tls/key.pem";

/// The certificate chain and key a server presents.
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The certificate clients should trust.
    pub cert_path: PathBuf,
    /// Whether it was created just now.
    pub created: bool,
}

/// Loads the deployment's certificate and key if given, else the data directory's, creating a
/// self-signed one there if there is none.
pub fn load_or_create(data_dir: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<TlsIdentity, String> {
    match (cert, key) {
        (Some(cert), Some(key)) => load(cert, key, false),
        (None, None) => {
            let (cert, key) = (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE));
            if cert.exists() || key.exists() {
                return load(&cert, &key, false);
            }
            create(&cert, &key)?;
            load(&cert, &key, true)
        }
        _ => Err("tls_cert and tls_key go together: give both or neither".into()),
    }
}

fn load(cert_path: &Path, key_path: &Path, created: bool) -> Result<TlsIdentity, String> {
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the TLS certificate {}: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("cannot read the TLS key {}: {e}", key_path.display()))?;
    Ok(TlsIdentity { chain, key, cert_path: cert_path.to_owned(), created })
}

fn create(cert_path: &Path, key_path: &Path) -> Result<(), String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() && !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
    }
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| format!("cannot create a certificate: {e}"))?;
    let dir = cert_path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    super::auth::write_private(key_path, certified.signing_key.serialize_pem().as_bytes())?;
    super::auth::write_file(cert_path, certified.cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// The rustls configuration of a server: TLS 1.3, ALPN `perpetua/2` (and `perpetua/1`, so that an
/// old client learns from the hello's answer that its version is not spoken), ring.
pub fn server_crypto(identity: &TlsIdentity) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| format!("the TLS certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![crate::protocol::ALPN.to_vec(), crate::protocol::ALPN_V1.to_vec()];
    Ok(config)
}
