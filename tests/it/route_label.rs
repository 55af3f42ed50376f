//! Refusals made before authorisation (a revoked key, a store or limiter outage) are counted
//! under the route the request was for, not `none`; which refusal wins does not change.

use crate::support::*;

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";
const PATTERN: &str = "/api/v1/clinics/{clinic_id}/interactions";

#[tokio::test]
async fn a_revoked_key_is_counted_under_its_route_and_still_refused_first() {
    let up = Upstream::spawn().await;
    let revoked = TestKey::live("k_label_revoked").with("    revoked_at: 2026-01-01T00:00:00Z\n");
    let kg = spawn_proxy(up.addr, &[&revoked], "").await;

    kg.get(INTERACTIONS, &[("authorization", &revoked.bearer())]).await.assert_error(401, "API_KEY_REVOKED");
    // An unknown path and a wrong method: the key's refusal still wins over 404 and 405.
    kg.get("/api/v1/nowhere", &[("authorization", &revoked.bearer())]).await.assert_error(401, "API_KEY_REVOKED");
    let delete = (http::Method::DELETE, [("authorization", revoked.bearer())]);
    let r = kg.send(delete.0, INTERACTIONS, &[("authorization", &delete.1[0].1)], bytes::Bytes::new()).await;
    r.assert_error(401, "API_KEY_REVOKED");

    let on_route = format!(
        r#"keygate_requests_total{{code="API_KEY_REVOKED",route="{PATTERN}",shape="inline",status_class="4xx"}}"#
    );
    assert_eq!(kg.metric(&on_route).await, 2.0, "the matched route and the path's route (405 would be next)");
    assert_eq!(
        kg.metric(r#"keygate_requests_total{code="API_KEY_REVOKED",route="none",shape="inline",status_class="4xx"}"#)
            .await,
        1.0
    );
    kg.get(INTERACTIONS, &[]).await.assert_error(401, "UNAUTHORIZED");
    assert_eq!(
        kg.metric(&format!(
            r#"keygate_requests_total{{code="UNAUTHORIZED",route="{PATTERN}",shape="inline",status_class="4xx"}}"#
        ))
        .await,
        1.0
    );
    assert_eq!(up.count(), 0);
}
