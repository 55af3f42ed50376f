//! `keygate webhook certs`: a self-signed CA and a serving certificate for the webhook's
//! Service, and the caBundle patch for the MutatingWebhookConfiguration. For clusters without
//! cert-manager; the CA's key is not written (nothing else is ever signed with it).

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

/// The webhooks in deploy/injector/mutatingwebhookconfiguration.yaml, each given the caBundle.
const WEBHOOKS: usize = 2;

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// The webhook's Service name.
    #[arg(long, default_value = "keygate-injector")]
    pub service: String,
    /// The webhook's namespace.
    #[arg(long, default_value = "keygate-injector")]
    pub namespace: String,
    /// Directory to write ca.crt, tls.crt, tls.key and cabundle-patch.json into.
    #[arg(long)]
    pub out: PathBuf,
    /// Days the serving certificate is valid (renew before: with failurePolicy Fail an expired
    /// certificate stops pod creation in opted-in namespaces).
    #[arg(long, default_value_t = 365)]
    pub days: i64,
}

/// PEM texts and the base64 caBundle.
pub struct Issued {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_bundle: String,
}

/// The names the API server may use for the Service (it dials `<service>.<namespace>.svc`).
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

pub fn issue(service: &str, namespace: &str, days: i64) -> anyhow::Result<Issued> {
    let now = time::OffsetDateTime::now_utc();
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, format!("keygate injector CA ({namespace}/{service})"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(days.max(1) * 2);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut leaf = CertificateParams::new(dns_names(service, namespace))?;
    leaf.distinguished_name.push(DnType::CommonName, format!("{service}.{namespace}.svc"));
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::days(days.max(1));
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key)?;
    let ca_pem = ca_cert.pem();
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&ca_pem);
    Ok(Issued { ca_pem, cert_pem: cert.pem(), key_pem: key.serialize_pem(), ca_bundle })
}

/// Writes the files; tls.key readable by its owner only.
pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    let issued = issue(&args.service, &args.namespace, args.days)?;
    std::fs::create_dir_all(&args.out).map_err(|e| anyhow::anyhow!("{}: {e}", args.out.display()))?;
    // deploy/injector's configuration has two webhooks (namespace opt-in, pod opt-in).
    let patch: Vec<serde_json::Value> = (0..WEBHOOKS)
        .map(|i| {
            serde_json::json!({
                "op": "add",
                "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                "value": issued.ca_bundle,
            })
        })
        .collect();
    let patch = serde_json::Value::from(patch);
    write(&args.out.join("ca.crt"), issued.ca_pem.as_bytes(), 0o644)?;
    write(&args.out.join("tls.crt"), issued.cert_pem.as_bytes(), 0o644)?;
    write(&args.out.join("tls.key"), issued.key_pem.as_bytes(), 0o600)?;
    write(&args.out.join("cabundle-patch.json"), format!("{patch}\n").as_bytes(), 0o644)?;
    println!(
        "wrote {dir}/ca.crt, tls.crt, tls.key (for {}.{}.svc) and cabundle-patch.json",
        args.service,
        args.namespace,
        dir = args.out.display()
    );
    Ok(())
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    f.write_all(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
