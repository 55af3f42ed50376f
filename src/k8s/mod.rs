//! Kubernetes sidecar injection: `keygate inject` rewrites manifests, `keygate webhook` answers
//! the API server's admission reviews with the same injection as a JSON patch.
//! `inject` + `sidecar` are the pure injection; `objects` and `service` the manifest handling;
//! `review` the webhook's decision, `webhook` its HTTPS server, `certs` its certificate.

pub mod certs;
pub mod inject;
pub mod objects;
pub mod review;
pub mod service;
pub mod sidecar;
pub mod webhook;

use std::io::Read;
use std::path::PathBuf;

use inject::Options;

/// What the sidecar is made of, for both `inject` and `webhook serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct SidecarArgs {
    /// The keygate image (per pod: annotation keygate.io/image).
    #[arg(long, env = "KEYGATE_INJECT_IMAGE", default_value = concat!("registry.example.com/keygate:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// ConfigMap holding keygate's config.yaml (per pod: keygate.io/config).
    #[arg(long, default_value = "keygate-config")]
    pub config_map: String,
    /// Secret holding the key table keys.yaml (per pod: keygate.io/keys-secret).
    #[arg(long, default_value = "keygate-keys")]
    pub keys_secret: String,
    /// Kubernetes < 1.29: a regular container instead of a native sidecar (init container with
    /// restartPolicy: Always). It may then start after the app and stop before it.
    #[arg(long)]
    pub legacy_sidecar: bool,
}

impl SidecarArgs {
    pub fn options(&self) -> Options {
        Options {
            image: self.image.clone(),
            config_map: self.config_map.clone(),
            keys_secret: self.keys_secret.clone(),
            legacy_sidecar: self.legacy_sidecar,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum WebhookCommand {
    /// Serve the mutating admission webhook (HTTPS): pods created in opted-in namespaces get
    /// keygate as a sidecar.
    Serve(webhook::ServeArgs),
    /// Write a self-signed CA, a serving certificate for the webhook's Service and the
    /// caBundle patch (for clusters without cert-manager).
    Certs(certs::CertsArgs),
}

#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// Manifests to read (YAML stream, JSON, or a List); none or `-`: standard input. The
    /// result goes to standard output, notes to standard error.
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
    /// Point the targetPort of Services in the input that select an injected pod at keygate.
    #[arg(long)]
    pub rewrite_service: bool,
}

/// Injects into one input's text: the output text and the notes for standard error.
pub fn inject_text(
    text: &str,
    source: &str,
    opts: &Options,
    rewrite_service: bool,
) -> anyhow::Result<(String, Vec<String>)> {
    let (format, mut docs) = objects::parse(text, source)?;
    let mut templates = Vec::new();
    for doc in docs.iter_mut() {
        templates.extend(objects::inject_object(doc, opts).map_err(|e| anyhow::anyhow!("{source}: {e}"))?);
    }
    let notes = service::adjust(&mut docs, &templates, rewrite_service);
    Ok((objects::render(format, &docs)?, notes))
}

/// `keygate inject`: every input is injected before anything is written, so an error leaves
/// standard output empty rather than half a manifest.
pub fn run_inject(args: &InjectArgs) -> anyhow::Result<()> {
    let opts = args.sidecar.options();
    let stdin = [PathBuf::from("-")];
    let files = if args.files.is_empty() { &stdin[..] } else { &args.files[..] };
    let mut outputs = Vec::new();
    for f in files {
        let (text, source) = if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            (s, "<stdin>".to_owned())
        } else {
            let s = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            (s, f.display().to_string())
        };
        let (out, notes) = inject_text(&text, &source, &opts, args.rewrite_service)?;
        for n in notes {
            eprintln!("keygate inject: {n}");
        }
        outputs.push(out);
    }
    // Several YAML files become one stream.
    let joined = outputs.join(if outputs.iter().all(|o| o.trim_start().starts_with('{')) { "" } else { "---\n" });
    print!("{joined}");
    Ok(())
}
