//! A PostgreSQL outage and the way back: a follower cut off from the database keeps trying at
//! least once per catch-up poll, so once the database answers again the replica is fresh within
//! a poll interval and a sync, however long the outage lasted (not after a backoff of seconds).

use std::time::{Duration, Instant};

use crate::pg_store::{ready, relayed, status, Relayed};
use crate::support::*;

const POLL: Duration = Duration::from_millis(200);

#[tokio::test]
async fn a_database_that_answers_again_is_noticed_within_the_poll() {
    let Relayed { relay, key, clock, kg, held: _held } =
        relayed("  poll_interval: 200ms\n  timeout: 300ms\n  max_staleness: 1s\n").await;

    relay.cut().await;
    clock.advance(Duration::from_secs(1) + Duration::from_nanos(1));
    assert_eq!(status(&kg, &key).await, 503, "stale past max_staleness");
    assert!(!ready(&kg).await);
    // Eight failed connects: a doubling backoff from 100 ms would be at its 5 s ceiling by now.
    let before = relay.accepted();
    eventually(Duration::from_secs(10), async || relay.accepted() >= before + 8).await;

    relay.restore();
    let restored = Instant::now();
    eventually(Duration::from_secs(10), async || kg.metric("keygate_key_store_connected").await == 1.0).await;
    let connected = restored.elapsed();
    eventually(Duration::from_secs(10), async || ready(&kg).await).await;
    let fresh = restored.elapsed();
    println!("restore → connected {connected:?}, fresh and ready {fresh:?} (poll {POLL:?})");
    assert!(connected <= POLL + Duration::from_millis(500), "reconnected only after {connected:?}");
    assert!(fresh <= POLL + Duration::from_secs(1), "fresh only after {fresh:?}");
    assert_eq!(status(&kg, &key).await, 200);
}
