//! The `keygate` binary: parse the command line, set up logging, dispatch, map errors to
//! exit codes (1 for anything that stopped it from doing its job).

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;
use keygate::cli::{Cli, Command};
use keygate::config::{self, LogFormat};
use keygate::k8s::WebhookCommand;
use keygate::keys::KeyHash;

/// Logs (the audit line above all) go through `logbuf`: batched, bounded, never blocking a
/// request. The guard flushes on exit.
fn init_tracing(format: LogFormat, level: &str) -> keygate::logbuf::FlushGuard {
    let env_filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level))
    };
    let filter = env_filter();
    let (writer, guard) =
        keygate::logbuf::BatchWriter::start(std::io::stderr(), 16 * 1024 * 1024, std::time::Duration::from_millis(50));
    match format {
        LogFormat::Json => {
            use tracing_subscriber::prelude::*;
            // The audit line has a formatter of its own (see `auditlog`); the rest is generic.
            let generic = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(writer.clone())
                .with_filter(tracing_subscriber::filter::filter_fn(keygate::auditlog::not_audit));
            // The decision line skips tracing (see `auditlog::decision`) when the filter wants it.
            if keygate::auditlog::passes(env_filter()) {
                let direct = writer.clone();
                keygate::auditlog::set_sink(move |line| direct.push(line));
            }
            tracing_subscriber::registry()
                .with(filter)
                .with(generic)
                .with(keygate::auditlog::AuditLayer::new(writer))
                .init();
        }
        // Colour codes only for a person at a terminal, never into a file or a log collector.
        LogFormat::Text => {
            use std::io::IsTerminal;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(writer)
                .init()
        }
    }
    guard
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One worker (set, or all the CPU affinity allows) runs the current-thread scheduler: no
/// work-stealing, no cross-thread wake-ups. More run the multi-thread scheduler.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = match std::env::var("KEYGATE_WORKER_THREADS") {
        Ok(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow::anyhow!("KEYGATE_WORKER_THREADS must be a number >= 1"))?,
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut b = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    Ok(b.enable_all().build()?)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { config } => {
            println!("{}", keygate::check_config::run(&config)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { config } => {
            let cfg = config::load(&config)?;
            let config::KeyStore::Postgres(pg) = &cfg.key_store else {
                anyhow::bail!("{}: key_store.kind is not postgres; the file store has no schema", config.display());
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let applied = rt.block_on(keygate::store::pgstore::migrate::run(pg))?;
            if applied.is_empty() {
                println!("schema {} is up to date (version {})", pg.schema, keygate::store::pgstore::migrate::latest());
            } else {
                println!("schema {}: applied migrations {applied:?}", pg.schema);
            }
            Ok(ExitCode::SUCCESS)
        }
        // A config (often from KEYGATE_CONFIG) is not needed: the server applies its own.
        Command::Keys { config: _, table, admin_url: Some(url), admin_token_file, command } => {
            keygate::keys_cli::run_remote(url, admin_token_file, table, command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { config, table, admin_url: None, admin_token_file: _, command } => {
            keygate::keys_cli::run(config, table, command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::AdminToken { id, scopes } => {
            print!("{}", keygate::keys_cli::mint_admin_token(&id, &scopes)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::HashKey => {
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input)?;
            let key = input.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                anyhow::bail!("expected exactly one key on standard input");
            }
            println!("{}", KeyHash::of(key).to_hex());
            Ok(ExitCode::SUCCESS)
        }
        Command::Inject(args) => {
            keygate::k8s::run_inject(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhook { command: WebhookCommand::Certs(args) } => {
            keygate::k8s::certs::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhook { command: WebhookCommand::Serve(args) } => {
            let _flush_logs_on_exit = init_tracing(LogFormat::Json, "info");
            runtime()?.block_on(keygate::k8s::webhook::run(&args))
        }
        Command::Serve { config } => {
            let cfg = config::load(&config)?;
            let _flush_logs_on_exit = init_tracing(cfg.log.format, &cfg.log.level);
            runtime()?.block_on(serve(cfg))
        }
        Command::Demo { listen, admin_listen, shape } => {
            let _flush_logs_on_exit = init_tracing(LogFormat::Text, "info");
            runtime()?.block_on(keygate::demo::run(listen, admin_listen, shape))
        }
    }
}

async fn serve(cfg: keygate::config::Config) -> anyhow::Result<ExitCode> {
    let running = keygate::app::start(cfg).await?;
    let cut = keygate::signals::run(running).await?;
    Ok(if cut == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
