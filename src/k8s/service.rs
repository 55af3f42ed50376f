//! What must change around an injected pod for traffic to pass keygate: the Services that
//! select it must target keygate's port instead of the app's, and the app must listen on
//! loopback only. Printed as notes, or (`--rewrite-service`) done to the Services in the input.

use serde_yaml::{Mapping, Value};

use super::inject::Outcome;
use super::objects::Template;
use super::sidecar::{ADMIN_PORT, PROXY_PORT, PROXY_PORT_NAME};

/// Notes for every template, and for every Service port that targets an injected app; with
/// `rewrite`, those ports' `targetPort` becomes keygate's.
pub fn adjust(docs: &mut [Value], templates: &[Template], rewrite: bool) -> Vec<String> {
    let mut notes = Vec::new();
    let mut covered = vec![false; templates.len()];
    for doc in docs.iter_mut() {
        services_in(doc, &mut |svc| notes.extend(adjust_service(svc, templates, &mut covered, rewrite)));
    }
    for (t, covered) in templates.iter().zip(covered) {
        match &t.outcome {
            Outcome::AlreadyInjected => notes.push(format!("{}: already injected, unchanged", t.object)),
            Outcome::OptedOut => notes.push(format!("{}: keygate.io/inject is disabled, unchanged", t.object)),
            Outcome::Injected { app_ports } => {
                let ports: Vec<String> = app_ports.iter().map(|p| p.port.to_string()).collect();
                let ports = if ports.is_empty() { "its port".to_owned() } else { ports.join(", ") };
                notes.push(format!(
                    "{}: keygate injected. The app must listen on 127.0.0.1 only ({ports}); keygate's config must \
                     set upstream.url to http://127.0.0.1:<that port>, listen: 0.0.0.0:{PROXY_PORT} and \
                     admin_listen: 0.0.0.0:{ADMIN_PORT} (the kubelet probes it)",
                    t.object
                ));
                if !covered {
                    notes.push(format!(
                        "{}: no Service in the input selects it; a Service that does must use targetPort: \
                         {PROXY_PORT_NAME} ({PROXY_PORT})",
                        t.object
                    ));
                }
            }
        }
    }
    notes
}

fn services_in(doc: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    match doc.get("kind").and_then(Value::as_str) {
        Some("Service") => f(doc),
        Some(k) if k.ends_with("List") => {
            for item in doc.get_mut("items").and_then(Value::as_sequence_mut).into_iter().flatten() {
                services_in(item, f);
            }
        }
        _ => {}
    }
}

fn selects(selector: &Mapping, labels: &Mapping) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn adjust_service(svc: &mut Value, templates: &[Template], covered: &mut [bool], rewrite: bool) -> Vec<String> {
    let name = svc.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("?").to_owned();
    let namespace = svc.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str).map(str::to_owned);
    let selector =
        svc.get("spec").and_then(|s| s.get("selector")).and_then(Value::as_mapping).cloned().unwrap_or_default();
    let mut notes = Vec::new();
    for (i, t) in templates.iter().enumerate() {
        let Outcome::Injected { app_ports } = &t.outcome else { continue };
        if t.namespace != namespace || !selects(&selector, &t.labels) {
            continue;
        }
        covered[i] = true;
        let ports = svc.get_mut("spec").and_then(|s| s.get_mut("ports")).and_then(Value::as_sequence_mut);
        for p in ports.into_iter().flatten() {
            let target = p.get("targetPort").or_else(|| p.get("port")).cloned().unwrap_or(Value::Null);
            let hits_app = app_ports.iter().any(|a| match &target {
                Value::Number(n) => n.as_i64() == Some(a.port),
                Value::String(s) => a.name.as_deref() == Some(s) || s.parse::<i64>().ok() == Some(a.port),
                _ => false,
            });
            if !hits_app {
                continue;
            }
            let port = p.get("port").map(|v| serde_yaml::to_string(v).unwrap_or_default().trim().to_owned());
            let target_text = serde_yaml::to_string(&target).unwrap_or_default().trim().to_owned();
            let port = port.unwrap_or_else(|| "?".to_owned());
            if rewrite {
                if let Some(m) = p.as_mapping_mut() {
                    m.insert("targetPort".into(), PROXY_PORT_NAME.into());
                }
                notes.push(format!(
                    "Service/{name} port {port}: targetPort {target_text} -> {PROXY_PORT_NAME} (keygate, {PROXY_PORT})"
                ));
            } else {
                notes.push(format!(
                    "Service/{name} port {port} targets the app ({target_text}) of {}: set targetPort: \
                     {PROXY_PORT_NAME} or the app stays reachable around keygate (--rewrite-service does it)",
                    t.object
                ));
            }
        }
    }
    notes
}
