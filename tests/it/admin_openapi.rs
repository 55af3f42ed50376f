//! The OpenAPI document checked against the server: every route the server routes is
//! documented with exactly its methods, and the real server is driven through every documented
//! operation and status, each answer's body checked against the documented schema (a small
//! JSON Schema checker: type, enum, const, properties, required, additionalProperties, items,
//! $ref, date-time), and every documented status seen at least once.

use std::collections::BTreeSet;

use http::Method;
use serde_json::{json, Value};

use crate::admin_api::{file_proxy, READER, WRITER, WRITE_ONLY};
use crate::support::*;

fn doc() -> Value {
    serde_yaml::from_str(keygate::admin::OPENAPI).expect("the OpenAPI document is YAML")
}

/// Problems of `v` against `schema`, each with its JSON path.
fn check(root: &Value, schema: &Value, v: &Value, at: &str) -> Vec<String> {
    if let Some(r) = schema["$ref"].as_str() {
        let target = r.trim_start_matches("#/").split('/').fold(root, |n, k| &n[k]);
        assert!(!target.is_null(), "dangling $ref {r}");
        return check(root, target, v, at);
    }
    let mut out = Vec::new();
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !types.is_empty() && !types.iter().any(|t| *t == kind || (*t == "number" && kind == "integer")) {
        return vec![format!("{at}: {kind}, documented as {types:?}")];
    }
    if let Some(list) = schema["enum"].as_array() {
        if !list.contains(v) {
            out.push(format!("{at}: {v} is not one of {list:?}"));
        }
    }
    if !schema["const"].is_null() && schema["const"] != *v {
        out.push(format!("{at}: {v} is not {}", schema["const"]));
    }
    if let (Some("date-time"), Some(s)) = (schema["format"].as_str(), v.as_str()) {
        if time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_err() {
            out.push(format!("{at}: {s:?} is not RFC 3339"));
        }
    }
    if let Value::Object(map) = v {
        let props = schema["properties"].as_object();
        for req in schema["required"].as_array().into_iter().flatten() {
            if !map.contains_key(req.as_str().unwrap()) {
                out.push(format!("{at}: missing {req}"));
            }
        }
        for (k, field) in map {
            match props.and_then(|p| p.get(k)) {
                Some(s) => out.extend(check(root, s, field, &format!("{at}.{k}"))),
                None if schema["additionalProperties"] == json!(false) => out.push(format!("{at}: undocumented {k}")),
                None => {}
            }
        }
    }
    if let (Value::Array(items), false) = (v, schema["items"].is_null()) {
        for (i, item) in items.iter().enumerate() {
            out.extend(check(root, &schema["items"], item, &format!("{at}[{i}]")));
        }
    }
    out
}

/// Checks each answer against the document and remembers which (path, method, status) it saw.
struct Contract {
    doc: Value,
    seen: BTreeSet<(String, String, String)>,
}

impl Contract {
    fn answered(&mut self, template: &str, method: &Method, r: &Resp) {
        let m = method.as_str().to_ascii_lowercase();
        let status = r.status.as_str().to_string();
        let resp = &self.doc["paths"][template][&m]["responses"][&status];
        assert!(!resp.is_null(), "{m} {template} answered {status}, which is not documented: {}", r.text());
        let resp = match resp["$ref"].as_str() {
            Some(name) => &self.doc["components"]["responses"][name.rsplit('/').next().unwrap()],
            None => resp,
        };
        let schema = &resp["content"]["application/json"]["schema"];
        assert!(!schema.is_null(), "{m} {template} {status}: no JSON schema documented");
        assert_eq!(r.headers["content-type"], "application/json", "{m} {template} {status}");
        let problems = check(&self.doc, schema, &r.json(), "$");
        assert!(problems.is_empty(), "{m} {template} {status} differs from the document:\n{}", problems.join("\n"));
        self.seen.insert((template.to_string(), m, status));
    }

    async fn call(
        &mut self,
        kg: &Proxy,
        method: Method,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> Resp {
        let r = kg.admin_call(method.clone(), path, token, body).await;
        self.answered(template, &method, &r);
        r
    }

    /// Every documented JSON status of every operation, that this test did not see.
    fn unseen(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (path, ops) in self.doc["paths"].as_object().unwrap() {
            for (m, op) in ops.as_object().unwrap().iter().filter(|(m, _)| *m != "parameters") {
                for status in op["responses"].as_object().unwrap().keys() {
                    let json = path != "/admin/openapi.yaml";
                    if json && !self.seen.contains(&(path.clone(), m.clone(), status.clone())) {
                        out.push(format!("{m} {path} {status}"));
                    }
                }
            }
        }
        out
    }
}

#[test]
fn every_route_is_documented_with_exactly_its_methods() {
    use keygate::admin::route::{route, ROUTES};
    let doc = doc();
    let mut documented: Vec<(String, Vec<String>)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(p, _)| *p != "/admin/openapi.yaml")
        .map(|(p, ops)| (p.clone(), ops.as_object().unwrap().keys().filter(|k| *k != "parameters").cloned().collect()))
        .collect();
    documented.sort();
    let mut routed: Vec<(String, Vec<String>)> =
        ROUTES.iter().map(|(p, ms)| (p.to_string(), ms.iter().map(|m| m.to_string()).collect())).collect();
    routed.iter_mut().for_each(|(_, ms)| ms.sort());
    documented.iter_mut().for_each(|(_, ms)| ms.sort());
    routed.sort();
    assert_eq!(documented, routed);
    for (path, methods) in ROUTES {
        let concrete = path.replace("{id}", "key_0123");
        for m in [Method::GET, Method::POST, Method::PATCH, Method::PUT, Method::DELETE] {
            let want = methods.contains(&m.as_str().to_ascii_lowercase().as_str());
            assert_eq!(route(&m, &concrete).is_ok(), want, "{m} {path}");
        }
    }
}

#[tokio::test]
async fn every_documented_answer_is_what_the_server_returns() {
    let (_up, kg) = file_proxy().await;
    let served = kg.admin_get("/admin/openapi.yaml").await;
    assert_eq!((served.status.as_u16(), served.text()), (200, keygate::admin::OPENAPI.to_string()));
    let mut c = Contract { doc: doc(), seen: BTreeSet::new() };
    let (list, one) = ("/admin/keys", "/admin/keys/{id}");
    let create = r#"{"label":"contract","scopes":["interactions:read"],"expires_at":"2999-01-01T00:00:00Z","allowed_ips":["10.0.0.0/8"]}"#;
    let r = c.call(&kg, Method::POST, list, list, Some(WRITER), create).await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    c.call(&kg, Method::POST, list, list, Some(WRITER), r#"{"label":""}"#).await;
    c.call(&kg, Method::POST, list, list, None, r#"{"label":"x"}"#).await;
    c.call(&kg, Method::POST, list, list, Some(READER), r#"{"label":"x"}"#).await;
    c.call(&kg, Method::POST, list, list, Some(WRITER), &format!(r#"{{"label":"{}"}}"#, "x".repeat(70_000))).await;
    for (q, token) in [("?limit=1", Some(READER)), ("?limit=0", Some(READER)), ("", None), ("", Some(WRITE_ONLY))] {
        c.call(&kg, Method::GET, list, &format!("{list}{q}"), token, "").await;
    }

    let path = format!("/admin/keys/{id}");
    eventually(std::time::Duration::from_secs(5), async || {
        kg.admin_call(Method::GET, &path, Some(READER), "").await.status == 200
    })
    .await;
    for token in [Some(READER), None, Some(WRITE_ONLY)] {
        c.call(&kg, Method::GET, one, &path, token, "").await;
    }
    c.call(&kg, Method::GET, one, "/admin/keys/key_nope", Some(READER), "").await;
    for (token, body) in [
        (Some(WRITER), r#"{"label":"renamed","clinics":null}"#),
        (Some(WRITER), r#"{"colour":1}"#),
        (None, "{}"),
        (Some(READER), "{}"),
    ] {
        c.call(&kg, Method::PATCH, one, &path, token, body).await;
    }
    c.call(&kg, Method::PATCH, one, "/admin/keys/key_nope", Some(WRITER), "{}").await;

    let events = "/admin/keys/{id}/events";
    for (p, token) in [
        (&path, Some(READER)),
        (&path, None),
        (&path, Some(WRITE_ONLY)),
        (&"/admin/keys/key_nope".to_string(), Some(READER)),
    ] {
        c.call(&kg, Method::GET, events, &format!("{p}/events"), token, "").await;
    }

    let rotate = "/admin/keys/{id}/rotate";
    for (token, body) in [(Some(WRITER), r#"{"grace":"soon"}"#), (None, ""), (Some(READER), "")] {
        c.call(&kg, Method::POST, rotate, &format!("{path}/rotate"), token, body).await;
    }
    c.call(&kg, Method::POST, rotate, "/admin/keys/key_nope/rotate", Some(WRITER), "").await;
    c.call(&kg, Method::POST, rotate, &format!("{path}/rotate"), Some(WRITER), r#"{"grace":"1m"}"#).await;
    c.call(&kg, Method::POST, rotate, &format!("{path}/rotate"), Some(WRITER), "").await;

    let revoke = "/admin/keys/{id}/revoke";
    for (token, body) in
        [(Some(WRITER), r#"{"reason":5}"#), (None, ""), (Some(READER), ""), (Some(WRITER), r#"{"reason":"done"}"#)]
    {
        c.call(&kg, Method::POST, revoke, &format!("{path}/revoke"), token, body).await;
    }
    c.call(&kg, Method::POST, revoke, "/admin/keys/key_nope/revoke", Some(WRITER), "").await;
    c.call(&kg, Method::PATCH, one, &path, Some(WRITER), r#"{"label":"after"}"#).await;

    // A table the store cannot read: writes and lists answer 503 and change nothing.
    std::fs::write(&kg.keys_path, "keys: [").unwrap();
    c.call(&kg, Method::GET, list, list, Some(READER), "").await;
    c.call(&kg, Method::POST, list, list, Some(WRITER), r#"{"label":"x"}"#).await;
    assert_eq!(c.unseen(), Vec::<String>::new(), "documented answers this test never saw");
}
