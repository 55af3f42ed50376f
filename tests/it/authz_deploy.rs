//! The shipped Envoy bootstrap, checked offline (no Envoy binary is reachable here): it is
//! YAML, every `@type` names a message the Envoy protocol definitions (envoy-types) have, and
//! every cluster a route or ext_authz service names is defined. nginx and Caddy configs are
//! run for real by authz_nginx / authz_caddy.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::ExtAuthz;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use prost::Name;
use serde_yaml::Value;

fn walk<'v>(v: &'v Value, key: &str, out: &mut Vec<&'v Value>) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                if k.as_str() == Some(key) {
                    out.push(child);
                }
                walk(child, key, out);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|c| walk(c, key, out)),
        _ => {}
    }
}

fn strings<'v>(v: &'v Value, key: &str) -> BTreeSet<&'v str> {
    let mut out = Vec::new();
    walk(v, key, &mut out);
    out.into_iter().filter_map(Value::as_str).collect()
}

#[test]
fn the_envoy_bootstrap_names_only_known_types_and_defined_clusters() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/authz/envoy.yaml")).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();

    let known: BTreeSet<String> =
        [HttpConnectionManager::type_url(), ExtAuthz::type_url(), Router::type_url(), HttpProtocolOptions::type_url()]
            .into_iter()
            .collect();
    let used = strings(&doc, "@type");
    assert!(!used.is_empty());
    for t in &used {
        assert!(known.contains(*t), "{t} is not an Envoy message envoy-types knows");
    }

    let clusters = doc["static_resources"]["clusters"].as_sequence().unwrap();
    let defined: BTreeSet<&str> = clusters.iter().filter_map(|c| c["name"].as_str()).collect();
    let mut referenced = strings(&doc, "cluster_name");
    referenced.extend(strings(&doc, "cluster"));
    assert!(referenced.contains("keygate_grpc") && referenced.contains("keygate_http"), "{referenced:?}");
    for r in &referenced {
        assert!(defined.contains(r), "cluster {r} is referenced but not defined ({defined:?})");
    }

    // Both listeners put ext_authz before the router, fail closed.
    let mut filters = Vec::new();
    walk(&doc, "http_filters", &mut filters);
    assert_eq!(filters.len(), 2);
    for list in filters {
        let names: Vec<&str> = list.as_sequence().unwrap().iter().filter_map(|f| f["name"].as_str()).collect();
        assert_eq!(names, ["envoy.filters.http.ext_authz", "envoy.filters.http.router"]);
        assert_eq!(list[0]["typed_config"]["failure_mode_allow"], Value::Bool(false));
    }
}
