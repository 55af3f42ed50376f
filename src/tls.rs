//! TLS termination for the main listener: rustls with ALPN (h2, http/1.1), certificate and key
//! from PEM files, swapped atomically on reload so new handshakes use the new pair while open
//! connections keep theirs. A bad pair on reload is refused and the old one kept.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::TlsFiles;

pub struct TlsState {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
}

impl TlsState {
    pub fn load(files: &TlsFiles) -> anyhow::Result<TlsState> {
        let cfg = server_config(&files.cert_file, &files.key_file)?;
        Ok(TlsState { files: files.clone(), current: ArcSwap::from_pointee(cfg) })
    }

    pub fn reload(&self) -> anyhow::Result<()> {
        let cfg = server_config(&self.files.cert_file, &self.files.key_file)?;
        self.current.store(Arc::new(cfg));
        Ok(())
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}

fn server_config(cert_file: &Path, key_file: &Path) -> anyhow::Result<ServerConfig> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("tls: cannot read {}: {e}", p.display()));
    let cert_pem = read(cert_file)?;
    let key_pem = read(key_file)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("tls: {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        anyhow::bail!("tls: {}: no certificates in PEM", cert_file.display());
    }
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
    Ok(cfg)
}
