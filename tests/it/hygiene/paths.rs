//! The one canonical path: what keygate authorises is what the upstream gets, byte for byte,
//! and a path an upstream could resolve differently is refused before it reaches it. One table
//! a rule: add a case where a new spelling turns up.

use super::*;

/// Request target as the client sent it → the target the upstream must see.
const FORWARDED: &[(&str, &str)] = &[
    // dot segments are resolved
    ("/api/v1/clinics/clinic_001/../clinic_001/interactions", "/api/v1/clinics/clinic_001/interactions"),
    // repeated slashes are merged
    ("//api//v1///clinics", "/api/v1/clinics"),
    // percent-encoded unreserved characters are decoded
    ("/api/%761/clinics", "/api/v1/clinics"),
    // the query is passed byte for byte, whatever it holds
    (
        "/api//v1/./clinics/clinic_001/../clinic_001/interactions?from=2026-01-01&q=%2F..%2Fx&&z",
        "/api/v1/clinics/clinic_001/interactions?from=2026-01-01&q=%2F..%2Fx&&z",
    ),
    // a percent sign that encodes no escape stays encoded
    ("/api/v1/clinics/100%25/interactions", "/api/v1/clinics/100%25/interactions"),
    // an encoded ';' inside a segment stays encoded (and upper-cased)
    ("/api/v1/clinics/a%3bb/interactions", "/api/v1/clinics/a%3Bb/interactions"),
];

/// Request target → a fragment the 400's message must contain ("" where any message will do).
const REFUSED: &[(&str, &str)] = &[
    // ambiguous: an encoded separator or dot segment, a backslash, NUL, broken UTF-8
    ("/api/v1/clinics/clinic_001%2F..%2Fclinic_002/interactions", ""),
    ("/api/v1/clinics/%2e%2e/x", ""),
    ("/api/v1/clinics\\clinic_002", ""),
    ("/api/v1/clinics/%00", ""),
    ("/api/v1/clinics/%C3", ""),
    // double encoding of a dot, slash, backslash or NUL, or of anything at all
    ("/api/v1/clinics/%252e%252e/interactions", "double percent-encoding"),
    ("/api/v1/clinics/%252E%252e/interactions", "double percent-encoding"),
    ("/api/v1/clinics/x%252fy/interactions", "double percent-encoding"),
    ("/api/v1/clinics/x%252Fy/interactions", "double percent-encoding"),
    ("/api/v1/clinics/x%255cy/interactions", "double percent-encoding"),
    ("/api/v1/clinics/x%255Cy/interactions", "double percent-encoding"),
    ("/api/v1/clinics/x%2500y/interactions", "double percent-encoding"),
    ("/api/v1/clinics/%2561/interactions", "double percent-encoding"),
    ("/api/v1/clinics/%25%32%65/interactions", "double percent-encoding"),
    // path parameters, alone or hiding a dot segment
    ("/api/v1/clinics/clinic_001/..;/clinic_002/interactions", "';'"),
    ("/api/v1/clinics/clinic_001/..;x=1/clinic_002/interactions", "';'"),
    ("/api/v1/clinics/clinic_001/.;/interactions", "';'"),
    ("/api/v1/clinics/clinic_001/..%3B/clinic_002/interactions", "';'"),
    ("/api/v1/clinics/clinic_001;jsessionid=1/interactions", "';'"),
];

#[tokio::test]
async fn the_upstream_gets_the_one_normalised_path_and_the_query_byte_for_byte() {
    let (up, key, kg) = proxy_for(TestKey::live("k_paths_ok").with("    type: full\n"), "").await;

    for (sent, forwarded) in FORWARDED {
        let resp = kg.raw(&raw_get(sent, &key)).await;

        assert_eq!(raw_status(&resp), 200, "{sent}: {resp}");
        assert_eq!(up.last().uri, *forwarded, "{sent}");
    }
}

#[tokio::test]
async fn a_path_an_upstream_could_read_another_way_is_refused_before_reaching_it() {
    let (up, key, kg) = proxy_for(TestKey::live("k_paths_refused").with("    type: full\n"), "").await;

    for (sent, says) in REFUSED {
        let resp = kg.raw(&raw_get(sent, &key)).await;

        assert_raw_error(&resp, 400, "INVALID_REQUEST");
        let message = raw_json(&resp)["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(says), "{sent}: {message}");
        assert_eq!(up.count(), 0, "{sent} reached the upstream");
    }
}

#[tokio::test]
async fn a_path_traversal_into_a_foreign_clinic_is_judged_as_that_clinic() {
    let (up, key, kg) = proxy_for(TestKey::live("k_traversal").with("    clinics: [clinic_001]\n"), "").await;

    let resp = kg.raw(&raw_get("/api/v1/clinics/clinic_001/../clinic_002/interactions", &key)).await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(raw_json(&resp), serde_json::json!({"success": true, "data": []}));
    assert_eq!(up.count(), 0);
}
