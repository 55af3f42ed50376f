//! `keygate keys …`: the key lifecycle from the command line. Reads and writes the key table
//! through the configured store (file or PostgreSQL), runs the pure lifecycle operations, and prints.
//! A secret is printed once, by `create` and `rotate`, and never stored.

mod admin_client;
mod credits;
mod import;
mod print;
mod remote;

pub use remote::{mint_admin_token, run_remote};
mod secret;
mod tsv;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use ipnet::IpNet;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::{CreateArgs, KeysCommand, UpdateArgs};
use crate::config::{AdminToken, Config, KeyStore};
use crate::keys::file::{RawKey, Shape};
use crate::keys::lifecycle::{self, Catalogue, KeySpec, Revoked, Update, Updated};
use crate::keys::scope::KeyType;
use crate::keys::Environment;
use crate::store::file::FileStore;
use crate::store::writer::TableStore;

/// What the key commands need from the config (or sensible defaults with only `--table`).
struct KeysContext {
    store: TableStore,
    environment: Option<Environment>,
    format: crate::keys::KeyFormat,
    prefixes: Vec<(String, Environment)>,
    catalogue: Catalogue,
    admin: Option<SocketAddr>,
    admin_token: Option<AdminToken>,
    /// The scopes a table read or imported may hold: the config's, or any without one.
    table_scopes: Catalogue,
    /// The configured rate-limit tiers (none known without a config).
    tiers: Option<crate::ratelimit::Tiers>,
    /// Where the fleet's live credit counters are (a Redis backend), for `credits show`.
    redis: Option<crate::config::RedisBackend>,
}

impl KeysContext {
    /// A key naming a tier the proxy does not have would silently get the default one.
    fn check_tier(&self, tier: Option<&str>) -> anyhow::Result<()> {
        if let (Some(name), Some(tiers)) = (tier, &self.tiers) {
            if let Some(known) = tiers.unknown(name) {
                bail!("--rate-limit {name:?} is not a tier in the config's rate_limits.tiers ({known})");
            }
        }
        Ok(())
    }
}

fn context(config: Option<PathBuf>, table: Option<PathBuf>) -> anyhow::Result<KeysContext> {
    let config = match (&config, &table) {
        (Some(p), _) => Some(crate::config::load(p)?),
        (None, Some(_)) => None,
        (None, None) => bail!("say which key table: --config FILE (or KEYGATE_CONFIG) or --table FILE"),
    };
    let Some(cfg) = config else {
        return Ok(KeysContext {
            // Without a config the routes are unknown: any well-formed scope is read, while
            // `create` and `update` still hold new scopes to the product's own.
            store: TableStore::File(FileStore::new(table.expect("checked above"), Catalogue::unchecked())),
            environment: None,
            // Without a config, imported keys are checked for shape but not for a checksum:
            // keys issued elsewhere rarely carry keygate's.
            format: crate::keys::KeyFormat { checksum: false, ..crate::keys::KeyFormat::default() },
            prefixes: crate::keys::KeyFormat::default().prefixes,
            catalogue: Catalogue::default(),
            table_scopes: Catalogue::unchecked(),
            admin: None,
            admin_token: None,
            tiers: None,
            redis: None,
        });
    };
    let catalogue = cfg.scope_catalogue();
    let Config { keys, key_store, environment, admin_listen, admin_token, rate_limits, .. } = cfg;
    Ok(KeysContext {
        // --table names a file, whatever store the config has.
        store: match (table, key_store) {
            (Some(path), _) | (None, KeyStore::File(path)) => TableStore::File(FileStore::new(path, catalogue.clone())),
            (None, KeyStore::Postgres(pg)) => TableStore::Postgres(pg, catalogue.clone()),
        },
        environment: Some(environment),
        prefixes: keys.format.prefixes.clone(),
        format: keys.format,
        table_scopes: catalogue.clone(),
        catalogue,
        admin: Some(admin_listen),
        admin_token,
        tiers: Some(rate_limits.tiers),
        redis: match rate_limits.backend {
            crate::config::LimitBackend::Redis(r) => Some(r),
            crate::config::LimitBackend::Local => None,
        },
    })
}

fn parse_env(s: &str) -> anyhow::Result<Environment> {
    s.parse::<Environment>().map_err(anyhow::Error::msg)
}

fn parse_type(s: &str) -> anyhow::Result<KeyType> {
    serde_yaml::from_str::<KeyType>(s).map_err(|_| anyhow::anyhow!("--type {s:?}: expected read_only, write or full"))
}

fn parse_ips(list: &[String]) -> anyhow::Result<Vec<IpNet>> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| anyhow::anyhow!("--allow-ip {s:?} is not an IP address or CIDR"))
        })
        .collect()
}

fn parse_expiry(now: OffsetDateTime, in_: Option<&str>, at: Option<&str>) -> anyhow::Result<Option<OffsetDateTime>> {
    match (in_, at) {
        (Some(d), _) => {
            let d =
                humantime::parse_duration(d).map_err(|e| anyhow::anyhow!("--expires-in {d:?}: {e} (e.g. 90d, 12h)"))?;
            Ok(Some(now + d))
        }
        (None, Some(t)) => Ok(Some(
            OffsetDateTime::parse(t, &Rfc3339).map_err(|e| anyhow::anyhow!("--expires-at {t:?}: {e} (RFC 3339)"))?,
        )),
        (None, None) => Ok(None),
    }
}

/// `keys create`'s flags as the new key and its environment (else the store's), the same for
/// the local store and the admin API.
fn spec(a: &CreateArgs, now: OffsetDateTime) -> anyhow::Result<(KeySpec, Option<Environment>)> {
    let spec = KeySpec {
        label: a.label.clone(),
        key_type: a.key_type.as_deref().map(parse_type).transpose()?,
        scopes: a.scopes.clone(),
        clinics: a.clinics.clone(),
        allowed_ips: parse_ips(&a.allow_ip)?,
        expires_at: parse_expiry(now, a.expires_in.as_deref(), a.expires_at.as_deref())?,
        rate_limit: a.rate_limit.clone(),
    };
    Ok((spec, a.env.as_deref().map(parse_env).transpose()?))
}

/// `keys update`'s flags as the change they ask for, the same for the local store and the
/// admin API.
fn change(a: &UpdateArgs, now: OffsetDateTime) -> anyhow::Result<Update> {
    Ok(Update {
        label: a.label.clone(),
        key_type: a.key_type.as_deref().map(parse_type).transpose()?,
        scopes: a.scopes.clone(),
        clinics: if a.all_clinics { Some(None) } else { a.clinics.clone().map(Some) },
        allowed_ips: if a.any_ip {
            Some(Vec::new())
        } else if a.allow_ip.is_empty() {
            None
        } else {
            Some(parse_ips(&a.allow_ip)?)
        },
        expires_at: if a.no_expiry {
            Some(None)
        } else {
            parse_expiry(now, a.expires_in.as_deref(), a.expires_at.as_deref())?.map(Some)
        },
        rate_limit: a.rate_limit.clone().map(Some),
    })
}

fn prefix_for(ctx: &KeysContext, env: Environment) -> anyhow::Result<&str> {
    crate::keys::format::prefix_for(&ctx.prefixes, env)
        .with_context(|| format!("no key prefix is configured for the {env} environment"))
}

pub fn run(config: Option<PathBuf>, table: Option<PathBuf>, cmd: KeysCommand) -> anyhow::Result<()> {
    let ctx = context(config, table)?;
    // Whole seconds: the table is read by people too.
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond");
    match cmd {
        KeysCommand::Create(args) => {
            let (spec, env) = spec(&args, now)?;
            let env = env.unwrap_or(ctx.environment.unwrap_or(Environment::Live));
            create(&ctx, spec, env, args.json, now)
        }
        KeysCommand::Revoke { id, reason, json } => revoke(&ctx, &id, reason, json, now),
        KeysCommand::Rotate { id, grace, json } => rotate(&ctx, &id, &grace, json, now),
        KeysCommand::Import { file: Some(path), .. } => import::import_file(&ctx, &path),
        KeysCommand::Import { tsv: Some(tsv), label, .. } => import::import_tsv(&ctx, &tsv, &label, now),
        KeysCommand::Import { .. } => bail!("give a key table FILE or --tsv FILE"),
        KeysCommand::Export { out, jsonl } => export(&ctx, out, jsonl),
        KeysCommand::Secret { name, namespace, file_name } => {
            let shape = if file_name.ends_with(".jsonl") { Shape::JsonLines } else { Shape::Yaml };
            let table = crate::keys::file::render(&ctx.store.read()?, shape)?;
            print!("{}", secret::manifest(&table, &name, namespace.as_deref(), &file_name)?);
            Ok(())
        }
        KeysCommand::Update(args) => update(&ctx, &args.id, change(&args, now)?, args.json, now),
        KeysCommand::List { json, env, label, state } => list(&ctx, json, env, label, state, now),
        KeysCommand::Show { id, json, admin } => show(&ctx, &id, json, admin, now),
        KeysCommand::Credits { command } => credits::run(&ctx, command, now),
    }
}

/// A secret given where an id belongs (`keys show dpl_live_…`) is refused before anything is
/// looked up or printed: echoing it into an error would copy it into terminals and CI logs.
fn check_id(ctx: &KeysContext, id: &str) -> anyhow::Result<()> {
    let looks_like_a_key = ctx.prefixes.iter().any(|(p, _)| id.starts_with(p.as_str())) || ctx.format.check(id).is_ok();
    if looks_like_a_key {
        bail!(
            "that looks like a key's secret, not its id (ids look like key_0123abcd…); it is not shown here. \
             Find the id with `keygate keys list`. A secret typed on a command line is in the shell history: \
             consider rotating the key."
        );
    }
    Ok(())
}

fn create(ctx: &KeysContext, spec: KeySpec, env: Environment, json: bool, now: OffsetDateTime) -> anyhow::Result<()> {
    ctx.check_tier(spec.rate_limit.as_deref())?;
    let prefix = prefix_for(ctx, env)?.to_string();
    let created = ctx.store.modify(|t| Ok(lifecycle::create(t, spec, env, &prefix, &ctx.catalogue, now)?))?;
    print::print_secret(&created, env, json, "Created");
    Ok(())
}

fn revoke(ctx: &KeysContext, id: &str, reason: Option<String>, json: bool, now: OffsetDateTime) -> anyhow::Result<()> {
    check_id(ctx, id)?;
    let outcome = ctx.store.modify(|t| Ok(lifecycle::revoke(t, id, reason, now)?))?;
    let (revoked_at, already) = match &outcome {
        Revoked::Now => (now, false),
        Revoked::Already { at, .. } => (*at, true),
    };
    if json {
        let v = serde_json::json!({"id": id, "revoked_at": print::ts(Some(revoked_at)), "already_revoked": already});
        println!("{v}");
    } else if already {
        println!("{id} was already revoked at {}; nothing changed.", print::fmt_time(Some(revoked_at)));
    } else {
        println!("Revoked {id}. A running proxy refuses it (API_KEY_REVOKED) {}.", ctx.store.propagation());
    }
    Ok(())
}

fn rotate(ctx: &KeysContext, id: &str, grace: &str, json: bool, now: OffsetDateTime) -> anyhow::Result<()> {
    check_id(ctx, id)?;
    let grace = humantime::parse_duration(grace).map_err(|e| anyhow::anyhow!("--grace {grace:?}: {e}"))?;
    let (created, env) = ctx.store.modify(|t| {
        let env = t.keys.iter().find(|k| k.id == id).map(|k| k.environment).unwrap_or(Environment::Live);
        let prefix = prefix_for(ctx, env)?.to_string();
        Ok((lifecycle::rotate(t, id, grace, &prefix, now)?, env))
    })?;
    print::print_secret(&created, env, json, "Rotated");
    if !json {
        println!(
            "The old key {id} keeps working until {} and then answers API_KEY_EXPIRED.",
            print::fmt_time(Some(now + grace))
        );
    }
    Ok(())
}

fn update(ctx: &KeysContext, id: &str, u: Update, json: bool, now: OffsetDateTime) -> anyhow::Result<()> {
    check_id(ctx, id)?;
    ctx.check_tier(u.rate_limit.as_ref().and_then(|t| t.as_deref()))?;
    let (outcome, key) = ctx.store.modify(|t| {
        let outcome = lifecycle::update(t, id, u, &ctx.catalogue, now)?;
        Ok((outcome, t.keys.iter().find(|k| k.id == id).cloned()))
    })?;
    let changed = outcome == Updated::Changed;
    if json {
        let mut v = key.map(|k| print::public_json(&k, now)).unwrap_or_default();
        v["changed"] = changed.into();
        println!("{v}");
    } else if changed {
        println!("Updated {id}.");
    } else {
        println!("{id} already has those settings; nothing changed.");
    }
    Ok(())
}

fn export(ctx: &KeysContext, out: Option<PathBuf>, jsonl: bool) -> anyhow::Result<()> {
    let t = ctx.store.read()?;
    let shape = if jsonl { Shape::JsonLines } else { Shape::Yaml };
    let text = crate::keys::file::render(&t, shape)?;
    match out {
        Some(path) => {
            write_private(&path, &text)?;
            eprintln!("Exported {} keys from {} to {}.", t.keys.len(), ctx.store.describe(), path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn list(
    ctx: &KeysContext,
    json: bool,
    env: Option<String>,
    label: Option<String>,
    state: Option<String>,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let env = env.as_deref().map(parse_env).transpose()?;
    let t = ctx.store.read()?;
    let keys: Vec<&RawKey> = t
        .keys
        .iter()
        .filter(|k| env.is_none_or(|e| k.environment == e))
        .filter(|k| label.as_deref().is_none_or(|l| k.label.contains(l)))
        .filter(|k| state.as_deref().is_none_or(|s| print::state_of(k, now) == s))
        .collect();
    if json {
        let out: Vec<serde_json::Value> = keys.iter().map(|k| print::public_json(k, now)).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print::print_table(&keys, now);
    }
    Ok(())
}

fn show(ctx: &KeysContext, id: &str, json: bool, admin: Option<String>, now: OffsetDateTime) -> anyhow::Result<()> {
    check_id(ctx, id)?;
    let t = ctx.store.read()?;
    let k = t.keys.iter().find(|k| k.id == id).with_context(|| format!("no key with id {id:?}"))?;
    let mut v = print::public_json(k, now);
    // PostgreSQL holds the fleet's usage (as of each proxy's last flush); --admin asks one
    // proxy for its own instead, as the file store always does.
    let fleet = if admin.is_none() { ctx.store.usage(id) } else { None };
    let admin = admin.or_else(|| ctx.admin.map(|a| admin_client::loopback_for(a).to_string()));
    v["usage"] = match fleet {
        Some(Ok(u)) => {
            let mut u = serde_json::to_value(u)?;
            u["source"] = "key store: every proxy, as of its last flush".into();
            u
        }
        Some(Err(e)) => serde_json::json!({"unavailable": format!("{e:#}")}),
        None => match admin.as_deref().map(|a| admin_client::key_usage(a, id, ctx.admin_token.as_ref())) {
            Some(Ok(u)) => u,
            Some(Err(e)) => serde_json::json!({"unavailable": e.to_string()}),
            None => serde_json::json!({"unavailable": "no admin address (give --admin or --config)"}),
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print::print_show(&v);
    }
    Ok(())
}

/// A table file holds only hashes, but it is still the list of every key: owner-only.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path).with_context(|| format!("{}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
