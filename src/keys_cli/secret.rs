//! `keys secret`: the key table as a Kubernetes Secret manifest, so a file-store user publishes
//! a change with one pipe (`keygate keys secret --name keygate-keys | kubectl apply -f -`).
//! The table holds hashes only; the manifest carries exactly what `keys export` writes.

use anyhow::bail;
use serde::Serialize;
use std::collections::BTreeMap;

/// The API server refuses a Secret whose data is over 1 MiB; a table that large belongs in the
/// PostgreSQL store.
const SECRET_MAX_BYTES: usize = 1024 * 1024;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Secret<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata<'a>,
    #[serde(rename = "type")]
    kind_of_secret: &'static str,
    string_data: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    labels: BTreeMap<&'static str, &'static str>,
}

/// The manifest for `table` (a rendered key table file) under `file_name` in the Secret.
pub fn manifest(table: &str, name: &str, namespace: Option<&str>, file_name: &str) -> anyhow::Result<String> {
    if table.len() > SECRET_MAX_BYTES {
        bail!(
            "the key table is {} bytes; a Kubernetes Secret holds at most 1 MiB. Use the PostgreSQL \
             store (key_store: postgres) for a table this size",
            table.len()
        );
    }
    if !is_dns_subdomain(name) {
        bail!("--name {name:?} is not a valid Secret name (lowercase letters, digits, '-' and '.', at most 253)");
    }
    let secret = Secret {
        api_version: "v1",
        kind: "Secret",
        metadata: Metadata {
            name,
            namespace,
            labels: BTreeMap::from([
                ("app.kubernetes.io/name", "keygate"),
                ("app.kubernetes.io/component", "key-table"),
            ]),
        },
        kind_of_secret: "Opaque",
        string_data: BTreeMap::from([(file_name, table)]),
    };
    let yaml = serde_yaml::to_string(&secret)?;
    Ok(format!("# keygate key table: SHA-256 hashes only, never plaintext keys.\n{yaml}"))
}

/// RFC 1123 subdomain, as the API server checks a Secret's name.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_travels_byte_for_byte_under_its_file_name() {
        let table = "keys:\n  - id: key_a\n    hash: \"00ff\"\n    label: \"a: b # not a comment\"\n";
        let m = manifest(table, "keygate-keys", Some("clinic"), "keys.yaml").unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&m).unwrap();
        assert_eq!(v["kind"], "Secret");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["type"], "Opaque");
        assert_eq!(v["metadata"]["name"], "keygate-keys");
        assert_eq!(v["metadata"]["namespace"], "clinic");
        assert_eq!(v["stringData"]["keys.yaml"].as_str().unwrap(), table);
    }

    #[test]
    fn no_namespace_means_the_current_one() {
        let m = manifest("keys: []\n", "k", None, "keys.yaml").unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&m).unwrap();
        assert!(v["metadata"].get("namespace").is_none(), "{m}");
    }

    #[test]
    fn a_name_the_api_server_would_refuse_is_refused_here() {
        for bad in ["", "Keygate", "-k", "k-", "k_keys", &"k".repeat(254)] {
            assert!(manifest("keys: []\n", bad, None, "keys.yaml").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_table_over_a_secret_s_limit_points_at_postgresql() {
        let big = "x".repeat(SECRET_MAX_BYTES + 1);
        let e = manifest(&big, "k", None, "keys.yaml").unwrap_err().to_string();
        assert!(e.contains("1 MiB") && e.contains("postgres"), "{e}");
    }
}
