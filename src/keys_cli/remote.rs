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

fn expiry(now: OffsetDateTime, in_: Option<&str>, at: Option<String>) -> anyhow::Result<Option<Value>> {
    match (in_, at) {
        (Some(d), _) => {
            let d = humantime::parse_duration(d).map_err(|e| anyhow::anyhow!("--expires-in {d:?}: {e}"))?;
            Ok(Some((now + d).format(&Rfc3339)?.into()))
        }
        (None, at) => Ok(at.map(Value::from)),
    }
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
            let body = fields(vec![
                ("label", Some(label.into())),
                ("environment", env.map(Value::from)),
                ("type", key_type.map(Value::from)),
                ("scopes", scopes.map(Value::from)),
                ("clinics", clinics.map(Value::from)),
                ("allowed_ips", (!allow_ip.is_empty()).then(|| allow_ip.into())),
                ("expires_at", expiry(now, expires_in.as_deref(), expires_at)?),
                ("rate_limit", rate_limit.map(Value::from)),
            ]);
            call(Method::POST, "/admin/keys".into(), Some(body), json, true)
        }
        KeysCommand::Rotate { id, grace, json } => {
            call(Method::POST, format!("/admin/keys/{id}/rotate"), Some(json!({"grace": grace})), json, true)
        }
        KeysCommand::Revoke { id, reason, json } => {
            let body = fields(vec![("reason", reason.map(Value::from))]);
            call(Method::POST, format!("/admin/keys/{id}/revoke"), Some(body), json, false)
        }
        KeysCommand::Show { id, json, .. } => call(Method::GET, format!("/admin/keys/{id}"), None, json, false),
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
            json,
        } => {
            let clinics = if all_clinics { Some(Value::Null) } else { clinics.map(Value::from) };
            let ips = if any_ip { Some(json!([])) } else { (!allow_ip.is_empty()).then(|| allow_ip.into()) };
            let expires = if no_expiry { Some(Value::Null) } else { expiry(now, expires_in.as_deref(), expires_at)? };
            let body = fields(vec![
                ("label", label.map(Value::from)),
                ("type", key_type.map(Value::from)),
                ("scopes", scopes.map(Value::from)),
                ("clinics", clinics),
                ("allowed_ips", ips),
                ("expires_at", expires),
                ("rate_limit", rate_limit.map(Value::from)),
            ]);
            call(Method::PATCH, format!("/admin/keys/{id}"), Some(body), json, false)
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
