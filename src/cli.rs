//! Command line: `serve`, `demo`, `check-config`, `hash-key`, `keys`, `inject`, `webhook`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "keygate",
    version,
    about = "Sidecar authorization proxy: API keys, scopes and clinic restrictions in front of an unmodified HTTP API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve {
        /// The YAML config (see config.example.yaml).
        #[arg(long, short, env = "KEYGATE_CONFIG", default_value = "/etc/keygate/config.yaml")]
        config: PathBuf,
    },
    /// Run keygate in front of a built-in sample upstream with freshly generated demo keys,
    /// and print curl commands to try.
    Demo {
        /// Where the demo proxy listens (pick another if the port is taken).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo's admin API (/metrics, /healthz, /readyz) listens.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
        /// Show keygate inline, or as the authorizer of a real front proxy on this machine
        /// (nginx auth_request or Caddy forward_auth, with the shipped deploy/authz config).
        #[arg(long, value_enum, default_value = "inline")]
        shape: crate::demo_front::DemoShape,
    },
    /// Validate a config file as `serve` would, short of binding sockets: the files it names
    /// (TLS pair, CAs, JWT keys, secrets, the key table) are loaded, and every problem is listed
    /// with its line. Exit 0 valid, 1 invalid.
    CheckConfig {
        /// The YAML config to check.
        config: PathBuf,
    },
    /// Create or upgrade the PostgreSQL key store's schema (key_store.kind: postgres). Safe to
    /// run again: applies only what is missing.
    Migrate {
        /// The YAML config whose key_store to migrate.
        #[arg(long, short, env = "KEYGATE_CONFIG", default_value = "/etc/keygate/config.yaml")]
        config: PathBuf,
    },
    /// Manage keys: create, list, show, revoke, rotate, update. Works on the key table named
    /// by the config (or --table); a running proxy picks each change up within seconds.
    Keys {
        /// Config whose key table, prefixes, environment and routes to use.
        #[arg(long, short, env = "KEYGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// The key table file (instead of the config's).
        #[arg(long, global = true)]
        table: Option<PathBuf>,
        /// Drive a running proxy's admin key API (e.g. http://10.0.0.5:9090) instead of a local
        /// store: create, list, show, update, rotate, revoke.
        #[arg(long, env = "KEYGATE_ADMIN_URL", global = true)]
        admin_url: Option<String>,
        /// A file holding the admin token for --admin-url.
        #[arg(long, env = "KEYGATE_ADMIN_TOKEN_FILE", global = true)]
        admin_token_file: Option<PathBuf>,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Mint an admin API token: prints the token once, and the `admin_tokens` entry (its
    /// SHA-256, never the token) to add to the config.
    AdminToken {
        /// The token's id, recorded with every change it makes.
        #[arg(long)]
        id: String,
        /// Comma-separated: keys:read, keys:write.
        #[arg(long, value_delimiter = ',', default_value = "keys:read")]
        scopes: Vec<String>,
    },
    /// Print the SHA-256 (hex) of a key read from standard input, for writing a key table by
    /// hand. The key is read from stdin so it never appears in the process list or history.
    HashKey,
    /// Add keygate as a sidecar to every pod template in Kubernetes manifests (like `linkerd
    /// inject`): `keygate inject deploy.yaml | kubectl apply -f -`.
    Inject(crate::k8s::InjectArgs),
    /// The Kubernetes admission webhook that injects keygate into new pods, and its certificate.
    Webhook {
        #[command(subcommand)]
        command: crate::k8s::WebhookCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key. Prints the key exactly once; only its hash is stored.
    Create(CreateArgs),
    /// List keys (never secrets).
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only this environment.
        #[arg(long)]
        env: Option<String>,
        /// Only labels containing this text.
        #[arg(long)]
        label: Option<String>,
        /// Only keys in this state: active, expired, revoked, not_yet_valid.
        #[arg(long)]
        state: Option<String>,
    },
    /// Everything about one key, with last use and request counts: the whole fleet's from the
    /// PostgreSQL store, or the running proxy's (the file store, or --admin).
    Show {
        /// The key's id (key_…), never its secret.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Ask this proxy's admin address for its own usage (the file store's default: the
        /// config's admin_listen).
        #[arg(long)]
        admin: Option<String>,
    },
    /// Revoke a key; the proxy refuses it within seconds (API_KEY_REVOKED). Revoking a key
    /// that is already revoked succeeds and changes nothing.
    Revoke {
        /// The key's id (key_…).
        id: String,
        /// Why, kept with the key (e.g. "leaked in ticket 123").
        #[arg(long)]
        reason: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Issue a successor with the same label, scopes, clinics and IPs; the old key keeps
    /// working for the grace period, then answers API_KEY_EXPIRED.
    Rotate {
        /// The key's id (key_…).
        id: String,
        /// How long the old key keeps working, e.g. 24h, 30m.
        #[arg(long, default_value = "24h")]
        grace: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Import a key table file (YAML or JSON Lines, hashes only) into the configured store,
    /// e.g. to move from the file store to PostgreSQL. Keys already present and identical are
    /// skipped; a different key under an existing id is refused.
    /// Or, with --tsv, import keys issued elsewhere from a TSV of `key<TAB>clinics<TAB>scopes`
    /// (clinics comma-separated or empty for all, scopes space-separated or empty for the
    /// default): hashed on the way in, the file itself is not kept, ids are derived.
    Import {
        /// A key table file (as `keys export` writes it).
        #[arg(required_unless_present = "tsv", conflicts_with = "tsv")]
        file: Option<PathBuf>,
        /// The TSV file (plaintext keys: delete it afterwards).
        #[arg(long)]
        tsv: Option<PathBuf>,
        /// Label given to every imported key.
        #[arg(long, default_value = "imported")]
        label: String,
    },
    /// Write the whole key table (hashes only) as a key table file, e.g. to move from
    /// PostgreSQL to the file store or to back it up.
    Export {
        /// Where to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// JSON Lines instead of YAML (the shape for large tables).
        #[arg(long)]
        jsonl: bool,
    },
    /// Print the key table (hashes only) as a Kubernetes Secret manifest, to publish a change
    /// to a file-store deployment: `keygate keys secret --name keygate-keys | kubectl apply -f -`.
    Secret {
        /// The Secret's name (the one the Deployment mounts).
        #[arg(long, default_value = "keygate-keys")]
        name: String,
        /// The Secret's namespace (default: none, kubectl's current one).
        #[arg(long)]
        namespace: Option<String>,
        /// The file name inside the Secret (the key table's name in the mount).
        #[arg(long, default_value = "keys.yaml")]
        file_name: String,
    },
    /// Change a key's label, scopes, clinics, IPs, expiry or tier. A change to what the key
    /// already has changes nothing (updated_at included).
    Update(UpdateArgs),
    /// A key's credits and calendar quotas: set, top up, show (with the live remaining from
    /// Redis when the config has a Redis backend).
    Credits {
        #[command(subcommand)]
        command: CreditsCommand,
    },
}

// The flags of `keys create` and `keys update`, one struct each so the local store and the
// remote admin API read them through the same conversion (keys_cli's `spec` and `change`).
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// What the key is for (shown in `list`, logs use the id).
    #[arg(long)]
    pub label: String,
    /// live or test (default: the config's environment, else live).
    #[arg(long)]
    pub env: Option<String>,
    /// read_only, write or full (presets over scopes).
    #[arg(long = "type", value_name = "TYPE", conflicts_with = "scopes")]
    pub key_type: Option<String>,
    /// Comma-separated scopes, e.g. interactions:read,metrics:read (default: all read scopes).
    #[arg(long, value_delimiter = ',')]
    pub scopes: Option<Vec<String>>,
    /// Comma-separated clinic ids the key is restricted to (default: every clinic).
    #[arg(long, value_delimiter = ',')]
    pub clinics: Option<Vec<String>>,
    /// Allowed client network (CIDR or IP); repeat for several (default: any address).
    #[arg(long = "allow-ip", value_name = "CIDR")]
    pub allow_ip: Vec<String>,
    /// Lifetime, e.g. 90d, 12h.
    #[arg(long, conflicts_with = "expires_at")]
    pub expires_in: Option<String>,
    /// Expiry as RFC 3339, e.g. 2027-01-01T00:00:00Z.
    #[arg(long)]
    pub expires_at: Option<String>,
    /// Rate-limit tier name.
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UpdateArgs {
    /// The key's id (key_…).
    pub id: String,
    /// New label.
    #[arg(long)]
    pub label: Option<String>,
    /// read_only, write or full (replaces the scopes).
    #[arg(long = "type", value_name = "TYPE", conflicts_with = "scopes")]
    pub key_type: Option<String>,
    /// Comma-separated scopes (replaces the type).
    #[arg(long, value_delimiter = ',')]
    pub scopes: Option<Vec<String>>,
    /// Comma-separated clinic ids the key is restricted to.
    #[arg(long, value_delimiter = ',', conflicts_with = "all_clinics")]
    pub clinics: Option<Vec<String>>,
    /// Lift the clinic restriction.
    #[arg(long)]
    pub all_clinics: bool,
    /// Replace the allowed networks (repeat for several).
    #[arg(long = "allow-ip", value_name = "CIDR", conflicts_with = "any_ip")]
    pub allow_ip: Vec<String>,
    /// Lift the IP restriction.
    #[arg(long)]
    pub any_ip: bool,
    /// New lifetime from now, e.g. 90d, 12h.
    #[arg(long, conflicts_with_all = ["expires_at", "no_expiry"])]
    pub expires_in: Option<String>,
    /// New expiry as RFC 3339, e.g. 2027-01-01T00:00:00Z.
    #[arg(long, conflicts_with = "no_expiry")]
    pub expires_at: Option<String>,
    /// Remove the expiry.
    #[arg(long)]
    pub no_expiry: bool,
    /// Rate-limit tier name.
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// Machine-readable output: the key as `show --json` prints it, and whether it changed.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand and every flag or argument says what it is for in `--help`.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "keygate", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}

#[derive(Debug, Subcommand)]
pub enum CreditsCommand {
    /// Set the balance now (every replica's counter starts over at it; top-ups are cleared).
    Set {
        /// The key's id (key_…).
        id: String,
        /// The balance, in cost units (a route costs 1 unless its `cost:` says otherwise).
        balance: u64,
        /// Refill the balance to this amount every --refill-every.
        #[arg(long, requires = "refill_every", conflicts_with = "no_refill")]
        refill: Option<u64>,
        /// daily or monthly (on the 1st).
        #[arg(long, value_name = "INTERVAL")]
        refill_every: Option<String>,
        /// The refill's time of day, HH:MM UTC (default 00:00).
        #[arg(long, value_name = "HH:MM", requires = "refill")]
        refill_at: Option<String>,
        /// Remove the refill.
        #[arg(long)]
        no_refill: bool,
        /// Machine-readable output: the key's credits as stored.
        #[arg(long)]
        json: bool,
    },
    /// Add to the balance; every replica adds it exactly once.
    Topup {
        /// The key's id (key_…).
        id: String,
        /// How much to add, in cost units.
        amount: u64,
        /// Machine-readable output: the key's credits as stored.
        #[arg(long)]
        json: bool,
    },
    /// The key's own quotas per UTC day and month (over its tier's).
    Quota {
        /// The key's id (key_…).
        id: String,
        /// At most this many cost units per UTC day (resets 00:00 UTC).
        #[arg(long, conflicts_with = "no_day")]
        day: Option<u64>,
        /// At most this many cost units per UTC month (resets on the 1st, 00:00 UTC).
        #[arg(long, conflicts_with = "no_month")]
        month: Option<u64>,
        /// Remove the key's own day quota (its tier's applies).
        #[arg(long)]
        no_day: bool,
        /// Remove the key's own month quota (its tier's applies).
        #[arg(long)]
        no_month: bool,
        /// Machine-readable output: the key's own quota as stored.
        #[arg(long)]
        json: bool,
    },
    /// The configured credits and quotas, and the live counter when Redis holds it.
    Show {
        /// The key's id (key_…).
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}
