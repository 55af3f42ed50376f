//! `keygate keys …`: the key lifecycle from the command line. Reads and writes the key table
//! through the configured store (file or PostgreSQL), runs the pure lifecycle operations, and prints.
//! A secret is printed once, by `create` and `rotate`, and never stored.

mod admin_client;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use ipnet::IpNet;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::KeysCommand;
use crate::config::{AdminToken, Config, KeyStore};
use crate::keys::file::{RawKey, RawTable, Shape};
use crate::keys::lifecycle::{self, Catalogue, KeySpec, Update};
use crate::keys::scope::KeyType;
use crate::keys::table::KeyState;
use crate::keys::Environment;
use crate::policy::Required;
use crate::store::file::FileStore;
use store::TableStore;

/// What the key commands need from the config (or sensible defaults with only `--table`).
struct KeysContext {
    store: TableStore,
    environment: Option<Environment>,
    format: crate::keys::KeyFormat,
    prefixes: Vec<(String, Environment)>,
    catalogue: Catalogue,
    admin: Option<SocketAddr>,
    admin_token: Option<AdminToken>,
    /// The configured rate-limit tiers (none known without a config).
    tiers: Option<crate::ratelimit::Tiers>,
}

impl KeysContext {
    /// A key naming a tier the proxy does not have would silently get the default one.
    fn check_tier(&self, tier: Option<&str>) -> anyhow::Result<()> {
        if let (Some(name), Some(tiers)) = (tier, &self.tiers) {
            if !tiers.is_known(name) {
                let known: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
                bail!("--rate-limit {name:?} is not a tier in the config's rate_limits.tiers ({})", known.join(", "));
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
            store: TableStore::File(FileStore::new(table.expect("checked above"))),
            environment: None,
            // Without a config, imported keys are checked for shape but not for a checksum:
            // keys issued elsewhere rarely carry keygate's.
            format: crate::keys::KeyFormat { checksum: false, ..crate::keys::KeyFormat::default() },
            prefixes: crate::keys::KeyFormat::default().prefixes,
            catalogue: Catalogue::default(),
            admin: None,
            admin_token: None,
            tiers: None,
        });
    };
    let Config { keys, key_store, environment, routes, admin_listen, admin_token, rate_limits, .. } = cfg;
    let route_scopes = routes.routes().iter().flat_map(|r| match &r.spec.required {
        Required::Resource { read, write } => vec![read.clone(), write.clone()],
        Required::Scopes(list) => list.clone(),
    });
    Ok(KeysContext {
        // --table names a file, whatever store the config has.
        store: match (table, key_store) {
            (Some(path), _) | (None, KeyStore::File(path)) => TableStore::File(FileStore::new(path)),
            (None, KeyStore::Postgres(pg)) => TableStore::Postgres(pg),
        },
        environment: Some(environment),
        prefixes: keys.format.prefixes.clone(),
        format: keys.format,
        catalogue: Catalogue::new(route_scopes.collect::<Vec<_>>()),
        admin: Some(admin_listen),
        admin_token,
        tiers: Some(rate_limits.tiers),
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

fn prefix_for(ctx: &KeysContext, env: Environment) -> anyhow::Result<&str> {
    ctx.prefixes
        .iter()
        .find(|(_, e)| *e == env)
        .map(|(p, _)| p.as_str())
        .with_context(|| format!("no key prefix is configured for the {env} environment"))
}

fn fmt_time(t: Option<OffsetDateTime>) -> String {
    ts(t).unwrap_or_else(|| "-".into())
}

pub fn run(config: Option<PathBuf>, table: Option<PathBuf>, cmd: KeysCommand) -> anyhow::Result<()> {
    let ctx = context(config, table)?;
    // Whole seconds: the table is read by people too.
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond");
    match cmd {
        KeysCommand::Create {
            label,
            env,
            key_type,
            scopes,
            clinics,
            allow_ip,
            expires_in,
            expires_at,
            rate_limit,
            json,
        } => {
            let env = match env {
                Some(e) => parse_env(&e)?,
                None => ctx.environment.unwrap_or(Environment::Live),
            };
            let spec = KeySpec {
                label,
                key_type: key_type.as_deref().map(parse_type).transpose()?,
                scopes,
                clinics,
                allowed_ips: parse_ips(&allow_ip)?,
                expires_at: parse_expiry(now, expires_in.as_deref(), expires_at.as_deref())?,
                rate_limit,
            };
            ctx.check_tier(spec.rate_limit.as_deref())?;
            let prefix = prefix_for(&ctx, env)?.to_string();
            let created = ctx.store.modify(|t| Ok(lifecycle::create(t, spec, env, &prefix, &ctx.catalogue, now)?))?;
            print_secret(&created, env, json, "Created");
        }
        KeysCommand::Revoke { id, reason } => {
            ctx.store.modify(|t| Ok(lifecycle::revoke(t, &id, reason, now)?))?;
            println!("Revoked {id}. A running proxy refuses it (API_KEY_REVOKED) {}.", ctx.store.propagation());
        }
        KeysCommand::Rotate { id, grace, json } => {
            let grace = humantime::parse_duration(&grace).map_err(|e| anyhow::anyhow!("--grace {grace:?}: {e}"))?;
            let (created, env) = ctx.store.modify(|t| {
                let env = t.keys.iter().find(|k| k.id == id).map(|k| k.environment).unwrap_or(Environment::Live);
                let prefix = prefix_for(&ctx, env)?.to_string();
                Ok((lifecycle::rotate(t, &id, grace, &prefix, now)?, env))
            })?;
            print_secret(&created, env, json, "Rotated");
            if !json {
                println!(
                    "The old key {id} keeps working until {} and then answers API_KEY_EXPIRED.",
                    fmt_time(Some(now + grace))
                );
            }
        }
        KeysCommand::Import { file: Some(path), .. } => {
            // Validated whole, as the proxy would load it, before anything is written.
            let incoming = FileStore::new(&path).read()?;
            let (added, same) = ctx.store.modify(|t| import_table(t, incoming))?;
            println!(
                "Imported {added} keys from {} into {} ({same} already there, unchanged; hashes only).",
                path.display(),
                ctx.store.describe()
            );
        }
        KeysCommand::Import { tsv: Some(tsv), label, .. } => {
            let text = std::fs::read_to_string(&tsv).with_context(|| format!("{}", tsv.display()))?;
            let added = ctx.store.modify(|t| {
                let before = t.keys.len();
                for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    let mut f = line.split('\t');
                    let (secret, clinics, scopes) =
                        (f.next().unwrap_or(""), f.next().unwrap_or(""), f.next().unwrap_or(""));
                    let list = |s: &str, sep: char| {
                        let v: Vec<String> =
                            s.split(sep).map(str::trim).filter(|x| !x.is_empty()).map(String::from).collect();
                        (!v.is_empty()).then_some(v)
                    };
                    let spec = KeySpec {
                        label: label.clone(),
                        clinics: list(clinics, ','),
                        scopes: list(scopes, ' '),
                        ..KeySpec::default()
                    };
                    if let Some(sc) = &spec.scopes {
                        ctx.catalogue
                            .check(sc)
                            .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", tsv.display(), n + 1))?;
                    }
                    lifecycle::import(t, secret, spec, &ctx.format, now)
                        .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", tsv.display(), n + 1))?;
                }
                Ok(t.keys.len() - before)
            })?;
            println!("Imported {added} keys into {} (hashes only).", ctx.store.describe());
        }
        KeysCommand::Import { .. } => bail!("give a key table FILE or --tsv FILE"),
        KeysCommand::Export { out, jsonl } => {
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
        }
        KeysCommand::Update {
            id,
            label,
            key_type,
            scopes,
            clinics,
            all_clinics,
            allow_ip,
            any_ip,
            expires_in,
            expires_at,
            no_expiry,
            rate_limit,
        } => {
            let u = Update {
                label,
                key_type: key_type.as_deref().map(parse_type).transpose()?,
                scopes,
                clinics: if all_clinics { Some(None) } else { clinics.map(Some) },
                allowed_ips: if any_ip {
                    Some(Vec::new())
                } else if allow_ip.is_empty() {
                    None
                } else {
                    Some(parse_ips(&allow_ip)?)
                },
                expires_at: if no_expiry {
                    Some(None)
                } else {
                    parse_expiry(now, expires_in.as_deref(), expires_at.as_deref())?.map(Some)
                },
                rate_limit: rate_limit.map(Some),
            };
            ctx.check_tier(u.rate_limit.as_ref().and_then(|t| t.as_deref()))?;
            ctx.store.modify(|t| Ok(lifecycle::update(t, &id, u, &ctx.catalogue, now)?))?;
            println!("Updated {id}.");
        }
        KeysCommand::List { json, env, label, state } => {
            let env = env.as_deref().map(parse_env).transpose()?;
            let t = ctx.store.read()?;
            let keys: Vec<&RawKey> = t
                .keys
                .iter()
                .filter(|k| env.is_none_or(|e| k.environment == e))
                .filter(|k| label.as_deref().is_none_or(|l| k.label.contains(l)))
                .filter(|k| state.as_deref().is_none_or(|s| state_of(k, now) == s))
                .collect();
            if json {
                let out: Vec<serde_json::Value> = keys.iter().map(|k| public_json(k, now)).collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_table(&keys, now);
            }
        }
        KeysCommand::Show { id, json, admin } => {
            let t = ctx.store.read()?;
            let k = t.keys.iter().find(|k| k.id == id).with_context(|| format!("no key with id {id:?}"))?;
            let mut v = public_json(k, now);
            // PostgreSQL holds the fleet's usage (as of each proxy's last flush); --admin asks one
            // proxy for its own instead, as the file store always does.
            let fleet = if admin.is_none() { ctx.store.usage(&id) } else { None };
            let admin = admin.or_else(|| ctx.admin.map(|a| admin_client::loopback_for(a).to_string()));
            match fleet {
                Some(Ok(u)) => {
                    v["usage"] = serde_json::to_value(u)?;
                    v["usage"]["source"] = "key store: every proxy, as of its last flush".into();
                }
                Some(Err(e)) => v["usage"] = serde_json::json!({"unavailable": format!("{e:#}")}),
                None => match admin.as_deref().map(|a| admin_client::key_usage(a, &id, ctx.admin_token.as_ref())) {
                    Some(Ok(u)) => v["usage"] = u,
                    Some(Err(e)) => v["usage"] = serde_json::json!({"unavailable": e.to_string()}),
                    None => {
                        v["usage"] = serde_json::json!({"unavailable": "no admin address (give --admin or --config)"})
                    }
                },
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_show(&v);
            }
        }
    }
    Ok(())
}

/// Adds the keys of `incoming` that `t` lacks; returns (added, already there). A different key
/// under an id `t` has is refused: an import never overwrites.
fn import_table(t: &mut RawTable, incoming: RawTable) -> anyhow::Result<(usize, usize)> {
    let have: std::collections::HashMap<String, serde_json::Value> =
        t.keys.iter().map(|k| (k.id.clone(), serde_json::to_value(k).unwrap_or_default())).collect();
    let (mut added, mut same, mut clash) = (0, 0, Vec::new());
    for k in incoming.keys {
        match have.get(&k.id) {
            Some(v) if *v == serde_json::to_value(&k)? => same += 1,
            Some(_) => clash.push(k.id),
            None => {
                t.keys.push(k);
                added += 1;
            }
        }
    }
    if !clash.is_empty() {
        bail!("these ids are already in the store with different contents (nothing imported): {}", clash.join(", "));
    }
    Ok((added, same))
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

/// The state the proxy would give this entry now (the same rule, `KeyState::at`).
fn state_of(k: &RawKey, now: OffsetDateTime) -> &'static str {
    let secs = |t: Option<OffsetDateTime>| t.map(|t| t.unix_timestamp());
    KeyState::at(secs(k.expires_at), secs(k.revoked_at), secs(k.not_before), now.unix_timestamp()).as_str()
}

fn ts(t: Option<OffsetDateTime>) -> Option<String> {
    t.and_then(|t| t.format(&Rfc3339).ok())
}

fn access(k: &RawKey) -> String {
    match (&k.key_type, &k.scopes) {
        (Some(t), _) => serde_yaml::to_string(t).unwrap_or_default().trim().to_string(),
        (None, Some(s)) => s.join(","),
        (None, None) => "read_only (default)".into(),
    }
}

/// Everything but the hash.
fn public_json(k: &RawKey, now: OffsetDateTime) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "label": k.label,
        "environment": k.environment.as_str(),
        "state": state_of(k, now),
        "access": access(k),
        "scopes": k.scopes,
        "type": k.key_type,
        "clinics": k.clinics,
        "allowed_ips": k.allowed_ips.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "rate_limit": k.rate_limit,
        "created_at": ts(k.created_at),
        "expires_at": ts(k.expires_at),
        "not_before": ts(k.not_before),
        "revoked_at": ts(k.revoked_at),
        "revoke_reason": k.revoke_reason,
        "rotated_from": k.rotated_from,
        "rotated_to": k.rotated_to,
        "updated_at": ts(k.updated_at),
    })
}

fn print_secret(c: &lifecycle::Created, env: Environment, json: bool, verb: &str) {
    if json {
        println!("{}", serde_json::json!({"id": c.id, "key": c.secret, "environment": env.as_str()}));
    } else {
        println!(
            "{verb} key {} ({env})\n\n    {}\n\nStore it now: keygate keeps only its hash and cannot show it again.",
            c.id, c.secret
        );
    }
}

fn print_table(keys: &[&RawKey], now: OffsetDateTime) {
    println!("{:<26} {:<5} {:<13} {:<28} {:<20} {:<25} LABEL", "ID", "ENV", "STATE", "ACCESS", "CLINICS", "EXPIRES");
    for k in keys {
        let clinics = k.clinics.as_ref().map_or_else(|| "*".to_string(), |c| c.join(","));
        println!(
            "{:<26} {:<5} {:<13} {:<28} {:<20} {:<25} {}",
            k.id,
            k.environment.as_str(),
            state_of(k, now),
            access(k),
            clinics,
            fmt_time(k.expires_at),
            k.label
        );
    }
}

fn print_show(v: &serde_json::Value) {
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            let shown = match val {
                serde_json::Value::Null => "-".to_string(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{k:<14} {shown}");
        }
    }
}
