//! Kubernetes objects as `keygate inject` reads and writes them: a YAML stream (one document or
//! many) or JSON, objects whose pod template is found by kind, and `List`s of them.
//!
//! Documents go through `serde_yaml::Value`, whose mappings keep insertion order, so every
//! field keeps its place and keygate's are appended. YAML comments, anchors, quoting style and
//! number spelling (`0444` becomes `292`) are not kept: the values are, byte for byte.

use serde_yaml::{Mapping, Value};

use super::inject::{inject_template, InjectError, Options, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

/// One pod template that was looked at.
#[derive(Debug, Clone)]
pub struct Template {
    /// `Kind/name`, for messages.
    pub object: String,
    pub namespace: Option<String>,
    pub labels: Mapping,
    pub outcome: Outcome,
}

/// Parses a file's text: JSON when it starts with `{` or `[`, a YAML stream otherwise. Empty
/// documents (a trailing `---`) are dropped.
pub fn parse(text: &str, source: &str) -> anyhow::Result<(Format, Vec<Value>)> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{source}: invalid JSON: {e}"))?;
        return Ok((Format::Json, vec![v]));
    }
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| anyhow::anyhow!("{source}: document {}: invalid YAML: {e}", i + 1))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok((Format::Yaml, docs))
}

pub fn render(format: Format, docs: &[Value]) -> anyhow::Result<String> {
    match format {
        Format::Json => {
            let mut out = String::new();
            for d in docs {
                out.push_str(&serde_json::to_string_pretty(d)?);
                out.push('\n');
            }
            Ok(out)
        }
        Format::Yaml => {
            let mut parts = Vec::with_capacity(docs.len());
            for d in docs {
                parts.push(serde_yaml::to_string(d)?);
            }
            Ok(parts.join("---\n"))
        }
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// The path from an object to its pod template, by kind; None for kinds without one.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            Some(&["spec", "template"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects into every pod template in `obj` (recursing into a `List`'s items).
pub fn inject_object(obj: &mut Value, opts: &Options) -> Result<Vec<Template>, InjectError> {
    let kind = str_at(obj, &["kind"]).unwrap_or("").to_owned();
    if kind.ends_with("List") {
        let mut found = Vec::new();
        for item in obj.get_mut("items").and_then(Value::as_sequence_mut).into_iter().flatten() {
            found.extend(inject_object(item, opts)?);
        }
        return Ok(found);
    }
    let Some(path) = template_path(&kind) else { return Ok(Vec::new()) };
    let object = format!("{kind}/{}", str_at(obj, &["metadata", "name"]).unwrap_or("?"));
    let namespace = str_at(obj, &["metadata", "namespace"]).map(str::to_owned);
    let mut template = obj;
    for (i, key) in path.iter().enumerate() {
        template = template.get_mut(key).ok_or_else(|| InjectError::Shape {
            object: object.clone(),
            field: path[..=i].join("."),
            expected: "present",
        })?;
    }
    let outcome = inject_template(template, &object, opts)?;
    let labels =
        template.get("metadata").and_then(|m| m.get("labels")).and_then(Value::as_mapping).cloned().unwrap_or_default();
    Ok(vec![Template { object, namespace, labels, outcome }])
}
