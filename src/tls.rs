//! TLS termination for the main listener: rustls with ALPN (h2, http/1.1), certificate and key
//! from PEM files, swapped atomically on reload so new handshakes use the new pair while open
//! connections keep theirs. A bad pair on reload is refused and the old one kept.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::TlsFiles;

pub struct TlsState {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    /// The served certificate's notAfter (Unix seconds), for the expiry gauge.
    not_after: AtomicI64,
}

impl TlsState {
    pub fn load(files: &TlsFiles) -> anyhow::Result<TlsState> {
        let (cfg, not_after) = server_config(&files.cert_file, &files.key_file)?;
        Ok(TlsState { files: files.clone(), current: ArcSwap::from_pointee(cfg), not_after: AtomicI64::new(not_after) })
    }

    pub fn reload(&self) -> anyhow::Result<()> {
        let (cfg, not_after) = server_config(&self.files.cert_file, &self.files.key_file)?;
        self.current.store(Arc::new(cfg));
        self.not_after.store(not_after, Ordering::Relaxed);
        Ok(())
    }

    /// When the certificate being served expires (Unix seconds).
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}

/// The leaf certificate's notAfter, in Unix seconds.
fn not_after(leaf: &CertificateDer<'_>, file: &Path) -> anyhow::Result<i64> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf.as_ref())
        .map_err(|e| anyhow::anyhow!("tls: {}: the certificate does not parse: {e}", file.display()))?;
    let secs = cert.tbs_certificate.validity.not_after.to_unix_duration().as_secs();
    Ok(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// The server config and its certificate's notAfter.
fn server_config(cert_file: &Path, key_file: &Path) -> anyhow::Result<(ServerConfig, i64)> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("tls: cannot read {}: {e}", p.display()));
    let cert_pem = read(cert_file)?;
    let key_pem = read(key_file)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("tls: {}: {e}", cert_file.display()))?;
    let Some(leaf) = certs.first() else {
        anyhow::bail!("tls: {}: no certificates in PEM", cert_file.display());
    };
    let expires = not_after(leaf, cert_file)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| anyhow::anyhow!("tls: {}: {e}", key_file.display()))?
        .ok_or_else(|| anyhow::anyhow!("tls: {}: no private key in PEM", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("tls: certificate and key do not match or are unusable: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((cfg, expires))
}
