//! `keygate keys --admin-url URL …`: the same commands driving a running proxy's admin key API
//! instead of a local store, for operators without access to the table file or the database.
//! The lifecycle rules are the server's (the same code the local commands run); this only turns
//! flags into requests and answers into output. Secrets are printed once, as locally.

use std::path::PathBuf;

use anyhow::{bail, Context};
use http::Method;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::admin_client::{call, expect_ok};
use crate::cli::KeysCommand;
use crate::keys::lifecycle::{KeySpec, Update};
use crate::keys::Environment;
use ipnet::IpNet;

/// Where and as whom: the admin API's URL and the token (from a file, never a flag, so it
/// stays out of the process list and shell history).
pub struct Remote {
    pub url: String,
    pub token: Option<String>,
}

impl Remote {
    pub fn new(url: String, token_file: Option<PathBuf>) -> anyhow::Result<Remote> {
        let token = match token_file {
            Some(p) => Some(std::fs::read_to_string(&p).with_context(|| p.display().to_string())?.trim().to_string()),
            None => None,
        };
        Ok(Remote { url, token })
    }

    fn send(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        expect_ok(call(&self.url, method, path, self.token.as_deref(), body.as_ref())?)
    }
}

/// `keygate keys --admin-url …`: the commands through a running proxy's admin key API.
pub fn run_remote(
    url: String,
    token_file: Option<PathBuf>,
    table: Option<PathBuf>,
    cmd: KeysCommand,
) -> anyhow::Result<()> {
    if table.is_some() {
        bail!("give --table (a local key table) or --admin-url (a running proxy), not both");
    }
    run(&Remote::new(url, token_file)?, cmd)
}

/// `keygate admin-token`: a new random token, shown once, and the config entry holding its hash.
pub fn mint_admin_token(id: &str, scopes: &[String]) -> anyhow::Result<String> {
    crate::config::AdminScopes::parse(scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token = format!("kgadm_{}", hex::encode(bytes));
    Ok(format!(
        "Admin token (shown once; keygate keeps only its hash):\n\n    {token}\n\nAdd to the config's admin_tokens (a reload applies it):\n\n  - id: {id}\n    sha256: {}\n    scopes: [{}]\n",
        crate::config::token_hash(&token),
        scopes.join(", ")
    ))
}

/// Only the fields given, as the API's JSON body.
fn fields(pairs: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(pairs.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect::<Map<_, _>>())
}

/// The new key as `POST /admin/keys` reads it (`admin::request::create`).
fn create_body(s: &KeySpec, env: Option<Environment>) -> anyhow::Result<Value> {
    Ok(fields(vec![
        ("label", Some(s.label.clone().into())),
        ("environment", env.map(|e| e.to_string().into())),
        ("type", s.key_type.map(serde_json::to_value).transpose()?),
        ("scopes", s.scopes.clone().map(Value::from)),
        ("clinics", s.clinics.clone().map(Value::from)),
        ("allowed_ips", (!s.allowed_ips.is_empty()).then(|| ips(&s.allowed_ips))),
        ("expires_at", s.expires_at.map(rfc3339).transpose()?),
        ("rate_limit", s.rate_limit.clone().map(Value::from)),
    ]))
}

/// The change as `PATCH /admin/keys/{id}` reads it (`admin::request::update`): a field left
/// out stays, `null` clears it.
fn update_body(u: &Update) -> anyhow::Result<Value> {
    let expires_at = match u.expires_at {
        Some(Some(t)) => Some(rfc3339(t)?),
        Some(None) => Some(Value::Null),
        None => None,
    };
    Ok(fields(vec![
        ("label", u.label.clone().map(Value::from)),
        ("type", u.key_type.map(serde_json::to_value).transpose()?),
        ("scopes", u.scopes.clone().map(Value::from)),
        ("clinics", u.clinics.clone().map(|c| c.map_or(Value::Null, Value::from))),
        ("allowed_ips", u.allowed_ips.as_deref().map(ips)),
        ("expires_at", expires_at),
        ("rate_limit", u.rate_limit.clone().map(|r| r.map_or(Value::Null, Value::from))),
    ]))
}

fn ips(list: &[IpNet]) -> Value {
    list.iter().map(|n| n.to_string()).collect::<Vec<_>>().into()
}

fn rfc3339(t: OffsetDateTime) -> anyhow::Result<Value> {
    Ok(t.format(&Rfc3339)?.into())
}

/// One call of the API, as a command asks for it.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    /// `--json`: print the answer as it came.
    json: bool,
    /// The answer holds a new secret (create, rotate).
    secret: bool,
}

fn run(remote: &Remote, cmd: KeysCommand) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond");
    let answer = match cmd {
        KeysCommand::List { json, env, label, state } => (list(remote, env, label, state)?, json, false),
        other => {
            let c = call_for(other, now)?;
            (remote.send(c.method, &c.path, c.body)?, c.json, c.secret)
        }
    };
    match answer {
        (answer, false, true) => println!(
            "Key {}\n\n    {}\n\nStore it now: keygate keeps only its hash and cannot show it again.",
            answer["id"].as_str().unwrap_or("?"),
            answer["secret"].as_str().unwrap_or("?")
        ),
        (answer, ..) => println!("{}", serde_json::to_string_pretty(&answer)?),
    }
    Ok(())
}

fn call_for(cmd: KeysCommand, now: OffsetDateTime) -> anyhow::Result<Call> {
    let call = |method, path: String, body, json, secret| Ok(Call { method, path, body, json, secret });
    match cmd {
        KeysCommand::Create(args) => {
            let (spec, env) = super::spec(&args, now)?;
            call(Method::POST, "/admin/keys".into(), Some(create_body(&spec, env)?), args.json, true)
        }
        KeysCommand::Rotate { id, grace, json } => {
            call(Method::POST, format!("/admin/keys/{id}/rotate"), Some(json!({"grace": grace})), json, true)
        }
        KeysCommand::Revoke { id, reason, json } => {
            let body = fields(vec![("reason", reason.map(Value::from))]);
            call(Method::POST, format!("/admin/keys/{id}/revoke"), Some(body), json, false)
        }
        KeysCommand::Show { id, json, .. } => call(Method::GET, format!("/admin/keys/{id}"), None, json, false),
        KeysCommand::Update(args) => {
            let body = update_body(&super::change(&args, now)?)?;
            call(Method::PATCH, format!("/admin/keys/{}", args.id), Some(body), args.json, false)
        }
        KeysCommand::List { .. }
        | KeysCommand::Import { .. }
        | KeysCommand::Export { .. }
        | KeysCommand::Secret { .. }
        | KeysCommand::Credits { .. } => {
            bail!(
                "import, export, secret and credits work on a local store (--config or --table), not through --admin-url"
            )
        }
    }
}

/// Every page, in the API's id order.
fn list(remote: &Remote, env: Option<String>, label: Option<String>, state: Option<String>) -> anyhow::Result<Value> {
    let mut filter = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [("environment", env), ("label", label), ("state", state)] {
        if let Some(v) = v {
            filter.append_pair(k, &v);
        }
    }
    let filter = filter.finish();
    let (mut keys, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let after = cursor.as_deref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let page = remote.send(Method::GET, &format!("/admin/keys?limit=1000&{filter}{after}"), None)?;
        keys.extend(page["keys"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(Value::Array(keys)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::request;
    use crate::cli::{CreateArgs, UpdateArgs};

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    /// What `--admin-url` sends is what the admin API reads back: the same key as locally.
    #[test]
    fn a_create_body_reads_back_as_the_same_spec() {
        let a = CreateArgs {
            label: "ops".into(),
            env: Some("test".into()),
            key_type: Some("write".into()),
            scopes: None,
            clinics: Some(vec!["c1".into()]),
            allow_ip: vec!["10.0.0.0/8".into(), "192.0.2.7".into()],
            expires_in: Some("90d".into()),
            expires_at: None,
            rate_limit: Some("gold".into()),
            json: false,
        };
        let (spec, env) = super::super::spec(&a, now()).unwrap();
        let body = create_body(&spec, env).unwrap().to_string();
        let back = request::create(body.as_bytes(), now()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{:?}", (spec, env)));
    }

    /// The same for a change, clearing (`--all-clinics`, `--any-ip`, `--no-expiry`) and setting.
    #[test]
    fn an_update_body_reads_back_as_the_same_change() {
        let clear = UpdateArgs {
            id: "key_1".into(),
            label: None,
            key_type: None,
            scopes: Some(vec!["interactions:read".into()]),
            clinics: None,
            all_clinics: true,
            allow_ip: vec![],
            any_ip: true,
            expires_in: None,
            expires_at: None,
            no_expiry: true,
            rate_limit: None,
            json: false,
        };
        let set = UpdateArgs {
            label: Some("x".into()),
            clinics: Some(vec!["c1".into()]),
            all_clinics: false,
            allow_ip: vec!["10.0.0.0/8".into()],
            any_ip: false,
            expires_at: Some("2028-01-01T00:00:00Z".into()),
            no_expiry: false,
            rate_limit: Some("gold".into()),
            ..clear.clone()
        };
        for a in [clear, set] {
            let change = super::super::change(&a, now()).unwrap();
            let body = update_body(&change).unwrap().to_string();
            let back = request::update(body.as_bytes(), now()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{change:?}"), "{body}");
        }
    }
}
