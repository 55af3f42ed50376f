//! One `admission.k8s.io/v1` AdmissionReview in, one out: the webhook's decision, pure. The
//! patch is the JSON diff of the pod before and after `inject::inject_template`, the function
//! `keygate inject` uses, so both ways of injecting produce the same pod.

use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube_core::DynamicObject;
use serde_json::Value as Json;

use super::inject::{inject_template, Options, Outcome};

/// Namespaces the webhook never injects into, whatever their labels say.
pub const SYSTEM_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];

#[derive(Debug, Clone)]
pub struct Policy {
    pub options: Options,
    /// The webhook's own namespace: injecting there could make it depend on itself.
    pub own_namespace: Option<String>,
}

/// What was decided, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Injected,
    /// Allowed unchanged: not a pod creation, an excluded namespace, opted out, or injected already.
    Skipped,
    /// Refused: the pod asked for keygate and cannot have it safely.
    Denied,
    /// Not a review the webhook can read.
    Invalid,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Injected => "injected",
            Decision::Skipped => "skipped",
            Decision::Denied => "denied",
            Decision::Invalid => "invalid",
        }
    }
}

/// The response review (always a valid AdmissionReview, also for garbage in) and the decision.
pub fn review(body: &[u8], policy: &Policy) -> (Json, Decision) {
    let (response, decision) = match respond(body, policy) {
        Ok(x) => x,
        Err(reason) => (AdmissionResponse::invalid(reason), Decision::Invalid),
    };
    let mut out = serde_json::to_value(response.into_review()).unwrap_or_else(|e| {
        // Only a patch that cannot be serialised gets here; answer without one.
        serde_json::to_value(AdmissionResponse::invalid(format!("cannot encode the response: {e}")).into_review())
            .unwrap_or(Json::Null)
    });
    base64_patch(&mut out);
    (out, decision)
}

/// kube-core serialises the patch (`[]byte` in the API) as an array of numbers; the API's JSON
/// form is base64 text, as the Kubernetes documentation shows it (kube-rs/kube#1781).
fn base64_patch(review: &mut Json) {
    use base64::Engine;
    let Some(patch) = review.pointer_mut("/response/patch") else { return };
    if let Ok(bytes) = serde_json::from_value::<Vec<u8>>(patch.clone()) {
        *patch = Json::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
}

fn respond(body: &[u8], policy: &Policy) -> Result<(AdmissionResponse, Decision), String> {
    let raw: Json = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let typed: AdmissionReview<DynamicObject> =
        serde_json::from_value(raw.clone()).map_err(|e| format!("not an admission.k8s.io/v1 AdmissionReview: {e}"))?;
    let req: AdmissionRequest<DynamicObject> =
        typed.try_into().map_err(|_| "the AdmissionReview has no request".to_owned())?;
    let allow = AdmissionResponse::from(&req);
    if req.kind.kind != "Pod" || req.resource.resource != "pods" || req.sub_resource.is_some() {
        return Ok((allow, Decision::Skipped));
    }
    if !matches!(req.operation, Operation::Create) {
        return Ok((allow, Decision::Skipped));
    }
    let namespace = req.namespace.as_deref().unwrap_or("");
    if SYSTEM_NAMESPACES.contains(&namespace) || policy.own_namespace.as_deref() == Some(namespace) {
        return Ok((allow, Decision::Skipped));
    }
    // The pod exactly as the API server sent it: the typed object may drop or reorder fields,
    // and the patch must apply to what the server has.
    let before = raw.pointer("/request/object").filter(|o| o.is_object()).ok_or("the request has no pod object")?;
    let mut pod: serde_yaml::Value =
        serde_json::from_value(before.clone()).map_err(|e| format!("the pod object is unreadable: {e}"))?;
    let name = pod_name(before);
    match inject_template(&mut pod, &format!("Pod/{name} in namespace {namespace}"), &policy.options) {
        Ok(Outcome::Injected { .. }) => {
            let after = serde_json::to_value(&pod).map_err(|e| format!("cannot encode the injected pod: {e}"))?;
            let patch = json_patch::diff(before, &after);
            let response = allow.with_patch(patch).map_err(|e| format!("cannot encode the patch: {e}"))?;
            Ok((response, Decision::Injected))
        }
        Ok(Outcome::AlreadyInjected | Outcome::OptedOut) => Ok((allow, Decision::Skipped)),
        Err(e) => Ok((allow.deny(format!("keygate injection was requested but is refused: {e}")), Decision::Denied)),
    }
}

/// Pods made by controllers have no name yet at admission, only a generateName prefix.
fn pod_name(pod: &Json) -> String {
    let meta = pod.get("metadata");
    let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(Json::as_str).filter(|s| !s.is_empty());
    match (field("name"), field("generateName")) {
        (Some(n), _) => n.to_owned(),
        (None, Some(g)) => format!("{g}*"),
        (None, None) => "(unnamed)".to_owned(),
    }
}
