//! The keygate sidecar as Kubernetes objects: the container, its two volumes, the resource
//! defaults and their per-pod overrides. The shape is deploy/kubernetes/deployment.yaml's
//! hand-written sidecar; keys are inserted in the order a person would write them.

use serde_yaml::{Mapping, Value};

pub const CONTAINER: &str = "keygate";
pub const PROXY_PORT: u16 = 8080;
pub const ADMIN_PORT: u16 = 9090;
/// Port names are IANA service names (at most 15 characters) and must not clash with the app's.
pub const PROXY_PORT_NAME: &str = "keygate";
pub const ADMIN_PORT_NAME: &str = "keygate-admin";
pub const CONFIG_VOLUME: &str = "keygate-config";
pub const KEYS_VOLUME: &str = "keygate-keys";
/// distroless "nonroot", the image's USER.
pub const UID: u32 = 65532;
const CONF_DIR: &str = "/etc/keygate/conf";
const KEYS_DIR: &str = "/etc/keygate/keys";

/// Resource overrides, one annotation each, and their defaults.
const RESOURCES: [(&str, &str, &str, &str); 4] = [
    ("keygate.io/cpu-request", "requests", "cpu", "50m"),
    ("keygate.io/memory-request", "requests", "memory", "32Mi"),
    ("keygate.io/cpu-limit", "limits", "cpu", "500m"),
    ("keygate.io/memory-limit", "limits", "memory", "128Mi"),
];

#[derive(Debug, Clone)]
pub struct Names {
    pub image: String,
    pub config_map: String,
    pub keys_secret: String,
    pub resources: Value,
}

fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Mapping(pairs.into_iter().map(|(k, v)| (Value::from(k), v)).collect::<Mapping>())
}

fn probe(path: &str, period: u32, failures: u32) -> Value {
    map([
        ("httpGet", map([("path", path.into()), ("port", ADMIN_PORT_NAME.into())])),
        ("periodSeconds", period.into()),
        ("timeoutSeconds", 2.into()),
        ("failureThreshold", failures.into()),
    ])
}

/// `preStop: sleep` (Kubernetes 1.30+; 1.29 with the PodLifecycleSleepAction gate): the
/// container keeps serving while endpoints stop sending to the terminating pod.
pub fn pre_stop_sleep(seconds: u32) -> Value {
    map([("preStop", map([("sleep", map([("seconds", seconds.into())]))]))])
}

/// The app's preStop sleep, from annotation `keygate.io/prestop-sleep-seconds` (default 5,
/// 0 = none): the app must outlive the endpoint update, since keygate forwards to it until
/// then.
pub fn pre_stop_seconds(annotations: &Mapping) -> Result<u32, String> {
    const ANNOTATION: &str = "keygate.io/prestop-sleep-seconds";
    match annotations.get(ANNOTATION) {
        None => Ok(5),
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|n| *n <= 300)
            .ok_or_else(|| format!("annotation {ANNOTATION} must be a whole number of seconds, 0 to 300")),
    }
}

fn port(name: &str, number: u16) -> Value {
    map([("name", name.into()), ("containerPort", number.into()), ("protocol", "TCP".into())])
}

fn mount(volume: &str, path: &str) -> Value {
    // Directory mounts (no subPath) so ConfigMap and Secret updates reach the pod.
    map([("name", volume.into()), ("mountPath", path.into()), ("readOnly", true.into())])
}

/// The sidecar container; `native` adds `restartPolicy: Always` (an init container that keeps
/// running: started and probed before the app, stopped after it).
pub fn container(names: &Names, native: bool) -> Value {
    let mut c = map([
        ("name", CONTAINER.into()),
        ("image", names.image.as_str().into()),
        ("imagePullPolicy", "IfNotPresent".into()),
    ]);
    let m = c.as_mapping_mut().expect("map() builds a mapping");
    if native {
        m.insert("restartPolicy".into(), "Always".into());
    }
    let rest = map([
        ("args", Value::Sequence(vec!["serve".into(), "--config".into(), format!("{CONF_DIR}/config.yaml").into()])),
        ("ports", Value::Sequence(vec![port(PROXY_PORT_NAME, PROXY_PORT), port(ADMIN_PORT_NAME, ADMIN_PORT)])),
        ("startupProbe", probe("/healthz", 2, 30)),
        ("readinessProbe", probe("/readyz", 5, 3)),
        ("livenessProbe", probe("/healthz", 10, 3)),
        ("resources", names.resources.clone()),
        (
            "securityContext",
            map([
                ("runAsNonRoot", true.into()),
                ("runAsUser", UID.into()),
                ("runAsGroup", UID.into()),
                ("readOnlyRootFilesystem", true.into()),
                ("allowPrivilegeEscalation", false.into()),
                ("capabilities", map([("drop", Value::Sequence(vec!["ALL".into()]))])),
                ("seccompProfile", map([("type", "RuntimeDefault".into())])),
            ]),
        ),
        ("volumeMounts", Value::Sequence(vec![mount(CONFIG_VOLUME, CONF_DIR), mount(KEYS_VOLUME, KEYS_DIR)])),
    ]);
    m.extend(rest.as_mapping().into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
    c
}

pub fn volumes(names: &Names) -> [Value; 2] {
    [
        map([
            ("name", CONFIG_VOLUME.into()),
            ("configMap", map([("name", names.config_map.as_str().into()), ("defaultMode", 0o444.into())])),
        ]),
        map([
            ("name", KEYS_VOLUME.into()),
            // Owner and the pod's fsGroup only: hashes, but still not for every container's uid.
            ("secret", map([("secretName", names.keys_secret.as_str().into()), ("defaultMode", 0o440.into())])),
        ]),
    ]
}

/// Requests and limits: the defaults, each replaced by its annotation when the pod has one.
pub fn resources(annotations: &Mapping) -> Result<Value, String> {
    let mut requests = Mapping::new();
    let mut limits = Mapping::new();
    for (annotation, section, resource, default) in RESOURCES {
        let value = match annotations.get(annotation) {
            None => default,
            Some(v) => match v.as_str() {
                Some(q) if is_quantity(q) => q,
                _ => return Err(format!("annotation {annotation} is not a Kubernetes quantity (e.g. 100m, 64Mi)")),
            },
        };
        let target = if section == "requests" { &mut requests } else { &mut limits };
        target.insert(resource.into(), value.into());
    }
    Ok(map([("requests", Value::Mapping(requests)), ("limits", Value::Mapping(limits))]))
}

/// The common quantity forms: digits, an optional fraction, an optional suffix.
fn is_quantity(q: &str) -> bool {
    const SUFFIXES: [&str; 13] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E"];
    let number = SUFFIXES.iter().find_map(|s| q.strip_suffix(s)).unwrap_or(q);
    let (whole, frac) = number.split_once('.').unwrap_or((number, "0"));
    !whole.is_empty()
        && !frac.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_checked() {
        for ok in ["50m", "1", "0.5", "128Mi", "2Gi", "1.5G"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "fast", "1.", ".5", "-1", "10 Mi", "1e3x"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn a_bad_resource_annotation_names_itself() {
        let ann: Mapping = serde_yaml::from_str("keygate.io/memory-limit: lots").unwrap();
        let err = resources(&ann).unwrap_err();
        assert!(err.contains("keygate.io/memory-limit"), "{err}");
    }
}
