//! The admission webhook over real HTTPS, with certificates `keygate webhook certs` wrote and
//! a client that checks them for the Service's DNS name as the API server does. Reviews are
//! shaped like the API server's (tests/golden/webhook/review-create-pod.json, after the
//! Kubernetes documentation's example). The patched pod is kept as a golden file that
//! .ci/lint-deploy.sh runs kubernetes-validate on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use keygate::k8s::inject::{inject_template, Options};
use keygate::k8s::review::{review, Policy};
use keygate::k8s::webhook::{self, ServeArgs};
use keygate::k8s::SidecarArgs;
use serde_json::{json, Value};

use crate::support::eventually;

const SERVICE_DNS: &str = "keygate-injector.keygate-injector.svc";

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/webhook").join(name)
}

fn create_review() -> Value {
    serde_json::from_str(&std::fs::read_to_string(golden("review-create-pod.json")).unwrap()).unwrap()
}

fn options() -> Options {
    Options {
        image: "registry.example.com/keygate:0.1.0".into(),
        config_map: "keygate-config".into(),
        keys_secret: "keygate-keys".into(),
        legacy_sidecar: false,
    }
}

/// `keygate webhook certs` into a fresh directory.
fn certs_cli(dir: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["webhook", "certs", "--service", "keygate-injector", "--namespace", "keygate-injector", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

struct Hook {
    running: webhook::Running,
    dir: tempfile::TempDir,
}

async fn spawn_webhook() -> Hook {
    let dir = tempfile::tempdir().unwrap();
    certs_cli(dir.path());
    let args = ServeArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert_file: dir.path().join("tls.crt"),
        key_file: dir.path().join("tls.key"),
        namespace: Some("keygate-injector".into()),
        reload_interval: Duration::from_millis(50),
        sidecar: SidecarArgs {
            image: "registry.example.com/keygate:0.1.0".into(),
            config_map: "keygate-config".into(),
            keys_secret: "keygate-keys".into(),
            legacy_sidecar: false,
        },
    };
    Hook { running: webhook::start(&args).await.unwrap(), dir }
}

impl Hook {
    fn ca(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.crt")).unwrap()
    }

    /// One request over a fresh TLS connection that trusts `ca` and expects SERVICE_DNS.
    async fn send(&self, ca: &str, method: &str, path: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
        let cfg = crate::support::client_tls_trusting(ca);
        let tcp = tokio::net::TcpStream::connect(self.running.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(SERVICE_DNS).unwrap();
        let tls =
            tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", SERVICE_DNS)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await.unwrap().to_bytes().to_vec()))
    }

    async fn review(&self, body: &Value) -> Value {
        let (status, bytes) =
            self.send(&self.ca(), "POST", "/inject", serde_json::to_vec(body).unwrap()).await.unwrap();
        assert_eq!(status, 200);
        let out: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        out["response"].clone()
    }

    async fn metric(&self, decision: &str) -> u64 {
        let (_, body) = self.send(&self.ca(), "GET", "/metrics", Vec::new()).await.unwrap();
        let text = String::from_utf8(body).unwrap();
        let series = format!("keygate_webhook_reviews_total{{decision=\"{decision}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("{series} in {text}"))
            .parse()
            .unwrap()
    }
}

fn patched(review: &Value, response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    // base64 text, the API's JSON form of []byte (kube-core alone would send an array).
    let bytes = base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

#[tokio::test]
async fn a_pod_created_in_an_opted_in_namespace_gets_keygate_by_json_patch() {
    let hook = spawn_webhook().await;
    let req = create_review();
    let resp = hook.review(&req).await;
    assert_eq!(resp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(resp["allowed"], true, "{resp}");
    let pod = patched(&req, &resp);

    // The same pod `keygate inject` makes from it.
    let mut expected: serde_yaml::Value = serde_json::from_value(req["request"]["object"].clone()).unwrap();
    inject_template(&mut expected, "Pod/x", &options()).unwrap();
    assert_eq!(pod, serde_json::to_value(&expected).unwrap());
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!((&sidecar["name"], &sidecar["restartPolicy"]), (&json!("keygate"), &json!("Always")));
    assert_eq!(pod["metadata"]["annotations"]["keygate.io/injected"], "true");
    // The app is untouched but for a preStop sleep: it serves on while endpoints update.
    let mut apps = req["request"]["object"]["spec"]["containers"].clone();
    for app in apps.as_array_mut().unwrap() {
        app["lifecycle"] = json!({"preStop": {"sleep": {"seconds": 5}}});
    }
    assert_eq!(pod["spec"]["containers"], apps);

    // Kept for kubernetes-validate (.ci/lint-deploy.sh); KEYGATE_BLESS=1 rewrites it.
    let yaml = serde_yaml::to_string(&pod).unwrap();
    let file = golden("patched-pod.out.yaml");
    if std::env::var_os("KEYGATE_BLESS").is_some() {
        std::fs::write(&file, &yaml).unwrap();
    }
    assert_eq!(yaml, std::fs::read_to_string(&file).unwrap(), "KEYGATE_BLESS=1 rewrites {}", file.display());
    assert_eq!(hook.metric("injected").await, 1);
}

#[tokio::test]
async fn opted_out_already_injected_and_excluded_pods_are_allowed_unchanged() {
    let hook = spawn_webhook().await;
    let mut opted_out = create_review();
    opted_out["request"]["object"]["metadata"]["annotations"] = json!({"keygate.io/inject": "disabled"});
    let injected_once = {
        let mut r = create_review();
        let first = review(&serde_json::to_vec(&r).unwrap(), &Policy { options: options(), own_namespace: None }).0;
        r["request"]["object"] = patched(&r, &first["response"]);
        r
    };
    let mut cases = vec![("opted out", opted_out), ("already injected", injected_once)];
    for ns in ["kube-system", "kube-public", "keygate-injector"] {
        let mut r = create_review();
        r["request"]["namespace"] = json!(ns);
        cases.push((ns, r));
    }
    let mut update = create_review();
    update["request"]["operation"] = json!("UPDATE");
    cases.push(("an update", update));
    let mut binding = create_review();
    binding["request"]["subResource"] = json!("binding");
    cases.push(("a subresource", binding));
    let mut not_a_pod = create_review();
    not_a_pod["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    not_a_pod["request"]["resource"] = json!({"group": "apps", "version": "v1", "resource": "deployments"});
    cases.push(("not a pod", not_a_pod));
    for (what, req) in &cases {
        let resp = hook.review(req).await;
        assert_eq!(resp["allowed"], true, "{what}: {resp}");
        assert!(resp.get("patch").is_none(), "{what}: patched: {resp}");
        assert_eq!(resp["uid"], req["request"]["uid"], "{what}");
    }
    assert_eq!(hook.metric("skipped").await, cases.len() as u64);
    assert_eq!(hook.metric("injected").await, 0);
}

#[tokio::test]
async fn a_host_network_pod_that_asked_for_keygate_is_denied_with_the_reason() {
    let hook = spawn_webhook().await;
    let mut req = create_review();
    req["request"]["object"]["spec"]["hostNetwork"] = json!(true);
    let resp = hook.review(&req).await;
    assert_eq!(resp["allowed"], false);
    assert_eq!(resp["uid"], req["request"]["uid"]);
    let message = resp["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "keygate injection was requested but is refused: Pod/clinic-api-7c9d8f6b5d-* in namespace clinics: \
             spec.hostNetwork is true"
        ),
        "{message}"
    );
    assert_eq!(hook.metric("denied").await, 1);
}

#[tokio::test]
async fn malformed_reviews_are_answered_not_allowed_with_what_is_wrong() {
    let hook = spawn_webhook().await;
    let mut no_uid = create_review();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("not JSON", b"{nope".to_vec(), "the body is not JSON"),
        ("no request", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), "has no request"),
        ("no uid", serde_json::to_vec(&no_uid).unwrap(), "missing field `uid`"),
        ("an array", b"[1,2]".to_vec(), "not an admission.k8s.io/v1 AdmissionReview"),
    ];
    for (what, body, want) in cases {
        let (status, bytes) = hook.send(&hook.ca(), "POST", "/inject", body).await.unwrap();
        assert_eq!(status, 200, "{what}");
        let out: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(out["response"]["allowed"], false, "{what}: {out}");
        let message = out["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains(want), "{what}: {message}");
    }
    assert_eq!(hook.metric("invalid").await, 4);
    let (status, body) = hook.send(&hook.ca(), "GET", "/healthz", Vec::new()).await.unwrap();
    assert_eq!((status, body), (200, b"ok\n".to_vec()));
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let hook = spawn_webhook().await;
    let old_ca = hook.ca();
    let renewed = tempfile::tempdir().unwrap();
    certs_cli(renewed.path());
    let new_ca = std::fs::read_to_string(renewed.path().join("ca.crt")).unwrap();
    assert!(hook.send(&new_ca, "GET", "/healthz", Vec::new()).await.is_err(), "the new CA is not trusted yet");
    for f in ["tls.key", "tls.crt"] {
        std::fs::copy(renewed.path().join(f), hook.dir.path().join(f)).unwrap();
    }
    eventually(Duration::from_secs(10), async || hook.send(&new_ca, "GET", "/healthz", Vec::new()).await.is_ok()).await;
    assert!(hook.send(&old_ca, "GET", "/healthz", Vec::new()).await.is_err(), "the old certificate is gone");
}

#[test]
fn certs_writes_a_private_key_only_its_owner_reads_and_a_ca_bundle_patch() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    certs_cli(dir.path());
    let mode = std::fs::metadata(dir.path().join("tls.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let patch: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cabundle-patch.json")).unwrap()).unwrap();
    // One op per webhook in deploy/injector's configuration.
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/injector/mutatingwebhookconfiguration.yaml"),
    )
    .unwrap();
    let webhooks = serde_yaml::from_str::<Value>(&config).unwrap()["webhooks"].as_array().unwrap().len();
    assert_eq!(patch.as_array().unwrap().len(), webhooks);
    for (i, op) in patch.as_array().unwrap().iter().enumerate() {
        assert_eq!(op["path"], format!("/webhooks/{i}/clientConfig/caBundle"));
        let bundle = base64::engine::general_purpose::STANDARD.decode(op["value"].as_str().unwrap()).unwrap();
        assert_eq!(bundle, std::fs::read(dir.path().join("ca.crt")).unwrap());
    }
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "[a-zA-Z0-9/._-]{0,12}".prop_map(Value::from),
            prop::sample::select(vec!["Pod", "pods", "CREATE", "v1", "true", "hostNetwork", "keygate"])
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Every JSON Pointer into `v`, so a mutation can land anywhere in a real review.
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m.iter().for_each(|(k, c)| pointers(c, format!("{at}/{k}"), out)),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| pointers(c, format!("{at}/{i}"), out)),
            _ => {}
        }
        out.push(at);
    }

    fn policy() -> Policy {
        Policy { options: options(), own_namespace: Some("keygate-injector".into()) }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn on_arbitrary_json(body in any_json()) {
            let (out, _) = review(&serde_json::to_vec(&body).unwrap(), &policy());
            prop_assert_eq!(&out["kind"], "AdmissionReview");
        }

        #[test]
        fn on_a_real_review_with_one_subtree_replaced(pick in any::<prop::sample::Index>(), with in any_json()) {
            let mut req = create_review();
            let mut all = Vec::new();
            pointers(&req, String::new(), &mut all);
            let at = pick.get(&all).clone();
            match req.pointer_mut(&at) {
                Some(slot) => *slot = with,
                None => unreachable!("pointers() lists existing paths"),
            }
            let (out, _) = review(&serde_json::to_vec(&req).unwrap(), &policy());
            prop_assert!(out["response"]["allowed"].is_boolean(), "{}", out);
        }

        #[test]
        fn on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let (out, _) = review(&body, &policy());
            prop_assert_eq!(&out["response"]["allowed"], false);
        }
    }
}
