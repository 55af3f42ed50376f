//! Honest metrics through a running keygate: the status the client got beside the decision,
//! the upstream's own 5xx counted, series present from the start and only for what is in use.

use crate::support::*;

#[tokio::test]
async fn a_forwarded_500_is_ok_as_a_decision_and_5xx_as_a_status() {
    let up =
        Upstream::spawn_with(Behaviour { status: Some(http::StatusCode::INTERNAL_SERVER_ERROR), ..Default::default() })
            .await;
    let key = TestKey::live("k_500");
    let kg = spawn_proxy(up.addr, &[&key], "").await;
    let r = kg.get("/api/v1/clinics", &[("authorization", &key.bearer())]).await;
    assert_eq!(r.status, 500);

    let ok_5xx = "keygate_requests_total{code=\"OK\",route=\"/api/v1/clinics\",status_class=\"5xx\"}";
    assert_eq!(kg.metric(ok_5xx).await, 1.0);
    assert_eq!(
        kg.metric("keygate_requests_total{code=\"OK\",route=\"/api/v1/clinics\",status_class=\"2xx\"}").await,
        0.0
    );
    assert_eq!(kg.metric("keygate_upstream_responses_total{status_class=\"5xx\"}").await, 1.0);
    assert_eq!(kg.metric("keygate_upstream_responses_total{status_class=\"2xx\"}").await, 0.0);
    let latency = "keygate_upstream_duration_seconds_count{method=\"GET\",route=\"/api/v1/clinics\"}";
    assert_eq!(kg.metric(latency).await, 1.0);
}

#[tokio::test]
async fn request_series_exist_at_zero_before_the_first_request_for_every_route() {
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &[], "public_routes:\n  - path: /health\n").await;
    let text = kg.admin_get("/metrics").await.text();
    for class in ["2xx", "3xx", "4xx", "5xx"] {
        for (code, route) in
            [("OK", "/api/v1/clinics"), ("OK", "/api/v1/clinics/{clinic_id}/interactions"), ("PUBLIC", "/health")]
        {
            let line =
                format!("keygate_requests_total{{code=\"{code}\",route=\"{route}\",shape=\"inline\",status_class=\"{class}\"}} 0");
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }
    assert!(text.contains("keygate_upstream_responses_total{status_class=\"5xx\"} 0"));
}

#[tokio::test]
async fn the_process_is_described_and_an_unused_store_or_tls_is_not() {
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &[], "").await;
    let text = kg.admin_get("/metrics").await.text();
    for family in
        ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"]
    {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} missing");
    }
    assert!(kg.metric("process_resident_memory_bytes").await > 0.0);
    assert!(!text.contains("keygate_key_store_"), "the file store has no key-store series");
    assert!(!text.contains("keygate_tls_certificate_expiry"), "no TLS, no expiry gauge");
}

#[tokio::test]
async fn methods_outside_the_bounded_set_share_one_series() {
    let (_up, key, kg) = proxy_for(TestKey::live("k_methods"), "").await;
    for m in ["PROPFIND", "BREW", "GET"] {
        let method = http::Method::from_bytes(m.as_bytes()).unwrap();
        kg.send(method, "/api/v1/clinics", &[("authorization", &key.bearer())], bytes::Bytes::new()).await;
    }
    let text = kg.admin_get("/metrics").await.text();
    assert_eq!(
        kg.metric("keygate_request_duration_seconds_count{method=\"other\",route=\"/api/v1/clinics\"}").await,
        2.0,
        "{text}"
    );
    assert!(!text.contains("PROPFIND") && !text.contains("BREW"));
}
