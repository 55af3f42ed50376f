//! Command line: `serve`, `demo`, `check-config`, `hash-key`.

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
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
    },
    /// Validate a config file (and the key table it names) and exit: 0 valid, 1 invalid.
    CheckConfig { config: PathBuf },
    /// Print the SHA-256 (hex) of a key read from standard input, for writing a key table by
    /// hand. The key is read from stdin so it never appears in the process list or history.
    HashKey,
}
