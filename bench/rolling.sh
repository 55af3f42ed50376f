#!/usr/bin/env bash
# A rolling update under steady load: two `keygate serve` processes in front of one upstream,
# 8 clients sending through a load balancer that follows the old instance's /readyz (polled
# every 100 ms, as an endpoints controller would) and moves to the new one when it turns 503;
# SIGTERM to the old instance once traffic flows. Counts every request that did not get its
# 200. Run twice: with a shutdown delay (the setting under test) and without one (keygate's
# behaviour before it), so the difference is the delay's.
#
# Usage: bench/rolling.sh [SECONDS] [DELAY]   (default 10 s of load after the SIGTERM, delay 2s)
# The harness is the integration test rollout::a_rolling_update_under_steady_load_loses_no_request.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
DELAY=${2:-2s}
run() {
  env KEYGATE_ROLLING_SECS="$SECS" KEYGATE_ROLLING_DELAY="$1" ${2:+KEYGATE_ROLLING_EXPECT_LOSS=1} \
    cargo test --quiet --test it rollout::a_rolling_update_under_steady_load_loses_no_request -- --nocapture 2>&1 |
    grep '^rolling update'
}
run "$DELAY"
run 0s expect-loss
