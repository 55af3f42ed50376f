//! TLS termination for the main listener: rustls with ALPN (h2, http/1.1), certificate and key
//! from PEM files, swapped atomically on reload so new handshakes use the new pair while open
//! connections keep theirs. A bad pair on reload is refused and the old one kept. The
//! external-authorization listeners also require a client certificate from a CA they are given
//! (the front proxy's mTLS), re-read with the pair.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::TlsFiles;

pub struct TlsState {
    /// The setting the files come from (`tls`, `authz.tls`): every error names it.
    setting: &'static str,
    files: TlsFiles,
    /// Client certificates must chain to these roots (none: no client certificate asked).
    client_ca: Option<PathBuf>,
    current: ArcSwap<ServerConfig>,
    /// The served certificate's notAfter (Unix seconds), for the expiry gauge.
    not_after: AtomicI64,
}

impl TlsState {
    pub fn load(files: &TlsFiles) -> anyhow::Result<TlsState> {
        let (cfg, not_after) = server_config("tls", files, None)?;
        let current = ArcSwap::from_pointee(cfg);
        Ok(TlsState { setting: "tls", files: files.clone(), client_ca: None, current, not_after: not_after.into() })
    }

    /// Like `load`, and every handshake must present a client certificate issued by a CA in
    /// `client_ca` (PEM): a client without one is refused before any request.
    pub fn load_requiring_client_cert(
        setting: &'static str,
        files: &TlsFiles,
        client_ca: &Path,
    ) -> anyhow::Result<TlsState> {
        let (cfg, not_after) = server_config(setting, files, Some(client_ca))?;
        let client_ca = Some(client_ca.to_path_buf());
        let current = ArcSwap::from_pointee(cfg);
        Ok(TlsState { setting, files: files.clone(), client_ca, current, not_after: not_after.into() })
    }

    pub fn reload(&self) -> anyhow::Result<()> {
        let (cfg, not_after) = server_config(self.setting, &self.files, self.client_ca.as_deref())?;
        self.current.store(Arc::new(cfg));
        self.not_after.store(not_after, Ordering::Relaxed);
        Ok(())
    }

    /// The served certificate's notAfter (Unix seconds).
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}

/// The leaf certificate's notAfter, in Unix seconds.
fn not_after(setting: &str, leaf: &CertificateDer<'_>, file: &Path) -> anyhow::Result<i64> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf.as_ref())
        .map_err(|e| anyhow::anyhow!("{setting}: {}: the certificate does not parse: {e}", file.display()))?;
    let secs = cert.tbs_certificate.validity.not_after.to_unix_duration().as_secs();
    Ok(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// The server config and its certificate's notAfter.
fn server_config(setting: &str, files: &TlsFiles, client_ca: Option<&Path>) -> anyhow::Result<(ServerConfig, i64)> {
    let (cert_file, key_file) = (&files.cert_file, &files.key_file);
    let read = |p: &Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("{setting}: cannot read {}: {e}", p.display()));
    let cert_pem = read(cert_file)?;
    let key_pem = read(key_file)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{setting}: {}: {e}", cert_file.display()))?;
    let Some(leaf) = certs.first() else {
        anyhow::bail!("{setting}: {}: no certificates in PEM", cert_file.display());
    };
    let expires = not_after(setting, leaf, cert_file)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| anyhow::anyhow!("{setting}: {}: {e}", key_file.display()))?
        .ok_or_else(|| anyhow::anyhow!("{setting}: {}: no private key in PEM", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(setting, ca, provider)?),
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("{setting}: certificate and key do not match or are unusable: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((cfg, expires))
}

/// Accepts client certificates that chain to a CA in the PEM file `ca_file`, and no others.
fn client_verifier(
    setting: &str,
    ca_file: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let at = ca_file.display();
    let pem = std::fs::read(ca_file).map_err(|e| anyhow::anyhow!("{setting}: cannot read {at}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| anyhow::anyhow!("{setting}: {at}: {e}"))?;
        roots.add(cert).map_err(|e| anyhow::anyhow!("{setting}: {at}: not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        anyhow::bail!("{setting}: {at}: no certificates in PEM");
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| anyhow::anyhow!("{setting}: {at}: {e}"))
}
