//! The injection itself: adds keygate as a sidecar to one pod template (a Pod, or the
//! `template` of a workload), the same way for `keygate inject` and the admission webhook.
//! Pure: a value in, the value changed in place, an outcome or an error naming the object.

use serde_yaml::{Mapping, Value};

use super::sidecar::{self, Names};

/// Set on every pod keygate was injected into; a second injection finds it and changes nothing.
pub const INJECTED: &str = "keygate.io/injected";
/// `enabled` or `disabled`: the per-pod opt-in (webhook) or opt-out (both).
pub const INJECT: &str = "keygate.io/inject";
pub const CONFIG: &str = "keygate.io/config";
pub const KEYS_SECRET: &str = "keygate.io/keys-secret";
pub const IMAGE: &str = "keygate.io/image";

/// What the caller chose; per-pod annotations override the names and the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub image: String,
    pub config_map: String,
    pub keys_secret: String,
    /// Before Kubernetes 1.29 there are no native sidecars: keygate becomes a regular container.
    pub legacy_sidecar: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error(
        "{0}: spec.hostNetwork is true; keygate cannot guard a pod on the node's network (its ports would be \
         the node's and the app's port stays reachable): refused"
    )]
    HostNetwork(String),
    #[error("{object}: {what}")]
    Conflict { object: String, what: String },
    #[error("{object}: {field} must be {expected}")]
    Shape { object: String, field: String, expected: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// keygate added; `app_ports` are the ports the app containers declared (what a Service
    /// targeted before and must not any more).
    Injected {
        app_ports: Vec<AppPort>,
    },
    AlreadyInjected,
    OptedOut,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPort {
    pub container: String,
    pub name: Option<String>,
    pub port: i64,
}

/// Injects into one pod template (`metadata` + `spec`). `object` names it in errors, e.g.
/// `Deployment/web`.
pub fn inject_template(template: &mut Value, object: &str, opts: &Options) -> Result<Outcome, InjectError> {
    let shape =
        |field: &str, expected| InjectError::Shape { object: object.to_owned(), field: field.to_owned(), expected };
    let root = template.as_mapping_mut().ok_or_else(|| shape("the pod template", "a mapping"))?;
    let annotations = annotations_of(root);
    if annotation(&annotations, INJECT) == Some("disabled") {
        return Ok(Outcome::OptedOut);
    }
    let spec = root.get("spec").and_then(Value::as_mapping).ok_or_else(|| shape("spec", "a mapping"))?;
    if annotation(&annotations, INJECTED).is_some() || has_keygate_container(spec) {
        return Ok(Outcome::AlreadyInjected);
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Err(InjectError::HostNetwork(object.to_owned()));
    }
    let app_ports = check_conflicts(spec, object)?;
    let names = Names {
        image: annotation(&annotations, IMAGE).unwrap_or(&opts.image).to_owned(),
        config_map: annotation(&annotations, CONFIG).unwrap_or(&opts.config_map).to_owned(),
        keys_secret: annotation(&annotations, KEYS_SECRET).unwrap_or(&opts.keys_secret).to_owned(),
        resources: sidecar::resources(&annotations)
            .map_err(|what| InjectError::Conflict { object: object.to_owned(), what })?,
    };
    let pre_stop = sidecar::pre_stop_seconds(&annotations)
        .map_err(|what| InjectError::Conflict { object: object.to_owned(), what })?;

    let meta = child_mapping(root, "metadata").ok_or_else(|| shape("metadata", "a mapping"))?;
    let ann = child_mapping(meta, "annotations").ok_or_else(|| shape("metadata.annotations", "a mapping"))?;
    // An app that is scraped already keeps its own scrape target.
    if !ann.contains_key("prometheus.io/scrape") {
        ann.insert("prometheus.io/scrape".into(), "true".into());
        ann.insert("prometheus.io/port".into(), sidecar::ADMIN_PORT.to_string().into());
        ann.insert("prometheus.io/path".into(), "/metrics".into());
    }
    ann.insert(INJECTED.into(), "true".into());

    let spec = child_mapping(root, "spec").ok_or_else(|| shape("spec", "a mapping"))?;
    // The app serves on while endpoints update (keygate, a native sidecar, is stopped only after
    // the app has exited). Not before 1.29, whose API servers do not know the sleep action: there
    // keygate's shutdown_delay and the app's own preStop do it (README, Operations).
    let apps = child_sequence(spec, "containers").ok_or_else(|| shape("spec.containers", "a list"))?;
    if pre_stop > 0 && !opts.legacy_sidecar {
        apps.iter_mut().filter_map(Value::as_mapping_mut).for_each(|c| add_pre_stop(c, pre_stop));
    }
    let list = if opts.legacy_sidecar { "containers" } else { "initContainers" };
    let container = sidecar::container(&names, !opts.legacy_sidecar);
    let containers = child_sequence(spec, list).ok_or_else(|| shape(&format!("spec.{list}"), "a list"))?;
    containers.push(container);
    let volumes = child_sequence(spec, "volumes").ok_or_else(|| shape("spec.volumes", "a list"))?;
    volumes.extend(sidecar::volumes(&names));
    // The key Secret is mounted 0440: keygate (uid 65532) reads it through the pod's fsGroup,
    // which is added to every container's groups. An fsGroup the pod already has does the same.
    let sc = child_mapping(spec, "securityContext").ok_or_else(|| shape("spec.securityContext", "a mapping"))?;
    if !sc.contains_key("fsGroup") {
        sc.insert("fsGroup".into(), sidecar::UID.into());
    }
    Ok(Outcome::Injected { app_ports })
}

/// A preStop sleep for a container that has no preStop of its own (its own is kept).
fn add_pre_stop(c: &mut Mapping, seconds: u32) {
    let lifecycle = c.entry("lifecycle".into()).or_insert(Value::Null);
    match lifecycle {
        Value::Null => *lifecycle = sidecar::pre_stop_sleep(seconds),
        Value::Mapping(m) if !m.contains_key("preStop") => {
            let hook = sidecar::pre_stop_sleep(seconds).as_mapping().and_then(|h| h.get("preStop")).cloned();
            m.insert("preStop".into(), hook.unwrap_or(Value::Null));
        }
        _ => {}
    }
}

fn annotations_of(root: &Mapping) -> Mapping {
    root.get("metadata").and_then(|m| m.get("annotations")).and_then(Value::as_mapping).cloned().unwrap_or_default()
}

fn annotation<'a>(annotations: &'a Mapping, key: &str) -> Option<&'a str> {
    annotations.get(key).and_then(Value::as_str)
}

fn containers_of<'a>(spec: &'a Mapping, list: &str) -> impl Iterator<Item = &'a Mapping> {
    spec.get(list).and_then(Value::as_sequence).into_iter().flatten().filter_map(Value::as_mapping)
}

fn has_keygate_container(spec: &Mapping) -> bool {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|l| containers_of(spec, l))
        .any(|c| c.get("name").and_then(Value::as_str) == Some(sidecar::CONTAINER))
}

/// keygate shares the pod's network and volume names: a port or volume it needs that is taken
/// would make the pod fail at start, so it is refused here with what to change.
fn check_conflicts(spec: &Mapping, object: &str) -> Result<Vec<AppPort>, InjectError> {
    let conflict = |what: String| InjectError::Conflict { object: object.to_owned(), what };
    let mut app_ports = Vec::new();
    for (list, c) in ["initContainers", "containers"].iter().flat_map(|l| containers_of(spec, l).map(move |c| (l, c))) {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("?").to_owned();
        for p in c.get("ports").and_then(Value::as_sequence).into_iter().flatten() {
            let Some(port) = p.get("containerPort").and_then(Value::as_i64) else { continue };
            if port == i64::from(sidecar::PROXY_PORT) || port == i64::from(sidecar::ADMIN_PORT) {
                return Err(conflict(format!(
                    "container {name} declares port {port}, which keygate listens on in the same pod: move the app \
                     to another port on 127.0.0.1 (e.g. 3000)"
                )));
            }
            let port_name = p.get("name").and_then(Value::as_str).map(str::to_owned);
            if port_name.as_deref().is_some_and(|n| n == sidecar::PROXY_PORT_NAME || n == sidecar::ADMIN_PORT_NAME) {
                return Err(conflict(format!(
                    "container {name} has a port named {}, keygate's",
                    port_name.unwrap_or_default()
                )));
            }
            if *list == "containers" {
                app_ports.push(AppPort { container: name.clone(), name: port_name, port });
            }
        }
    }
    for v in spec.get("volumes").and_then(Value::as_sequence).into_iter().flatten() {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if name == sidecar::CONFIG_VOLUME || name == sidecar::KEYS_VOLUME {
            return Err(conflict(format!("a volume is already named {name}, which keygate's sidecar needs")));
        }
    }
    Ok(app_ports)
}

/// The mapping under `key`, created when absent (or null); None when it is something else.
fn child_mapping<'a>(m: &'a mut Mapping, key: &str) -> Option<&'a mut Mapping> {
    let v = m.entry(key.into()).or_insert(Value::Null);
    if v.is_null() {
        *v = Value::Mapping(Mapping::new());
    }
    v.as_mapping_mut()
}

fn child_sequence<'a>(m: &'a mut Mapping, key: &str) -> Option<&'a mut Vec<Value>> {
    let v = m.entry(key.into()).or_insert(Value::Null);
    if v.is_null() {
        *v = Value::Sequence(Vec::new());
    }
    v.as_sequence_mut()
}
