use super::*;
use time::macros::datetime;
use time::OffsetDateTime;

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn plan(balance: u64) -> CreditPlan {
    CreditPlan { balance, revision: 0, topped_up: 0, refill: None }
}

fn charge(c: &mut Counter, plan: Option<&CreditPlan>, calendar: Calendar, cost: u64, now: i64) -> Outcome {
    let ch = Charge { plan, calendar, cost, now };
    let v = decide(c, &ch.args());
    Outcome::of(v, c, &ch)
}

const NOON: OffsetDateTime = datetime!(2026-03-05 12:00 UTC);

#[test]
fn credits_are_spent_at_the_route_cost_and_refused_when_short() {
    let (mut c, p) = (Counter::default(), plan(5));
    let o = charge(&mut c, Some(&p), Calendar::default(), 2, unix(NOON));
    assert_eq!((o.verdict, o.credits_remaining, o.credits_reset), (Verdict::Allowed, Some(3), None));
    assert_eq!(charge(&mut c, Some(&p), Calendar::default(), 2, unix(NOON)).credits_remaining, Some(1));
    let o = charge(&mut c, Some(&p), Calendar::default(), 2, unix(NOON));
    assert_eq!((o.verdict, o.credits_remaining), (Verdict::CreditsExhausted, Some(1)), "a refusal spends nothing");
    assert_eq!(o.retry_after(), None, "no refill: nothing to wait for");
    assert_eq!(charge(&mut c, Some(&p), Calendar::default(), 1, unix(NOON)).verdict, Verdict::Allowed);
}

#[test]
fn a_refill_sets_the_balance_at_its_utc_time_exactly() {
    let refill = Refill { amount: 10, interval: Interval::Daily, at_secs: 0 };
    let p = CreditPlan { refill: Some(refill), ..plan(1) };
    let mut c = Counter::default();
    let midnight = datetime!(2026-03-06 00:00 UTC);
    assert_eq!(charge(&mut c, Some(&p), Calendar::default(), 1, unix(NOON)).credits_remaining, Some(0));
    let before = (midnight - time::Duration::nanoseconds(1)).unix_timestamp();
    let o = charge(&mut c, Some(&p), Calendar::default(), 1, before);
    assert_eq!((o.verdict, o.credits_reset, o.retry_after()), (Verdict::CreditsExhausted, Some(1), Some(1)));
    let o = charge(&mut c, Some(&p), Calendar::default(), 1, unix(midnight));
    assert_eq!((o.verdict, o.credits_remaining), (Verdict::Allowed, Some(9)), "refilled to the amount, then charged");
    assert_eq!(o.credits_reset, Some(86_400));
}

#[test]
fn a_top_up_is_added_once_however_often_it_is_seen() {
    let mut c = Counter::default();
    let p = plan(2);
    charge(&mut c, Some(&p), Calendar::default(), 2, unix(NOON));
    let topped = CreditPlan { topped_up: 5, ..p };
    assert_eq!(charge(&mut c, Some(&topped), Calendar::default(), 1, unix(NOON)).credits_remaining, Some(4));
    assert_eq!(charge(&mut c, Some(&topped), Calendar::default(), 1, unix(NOON)).credits_remaining, Some(3));
    // A replica still on the table from before the top-up adds nothing, and takes nothing back.
    assert_eq!(charge(&mut c, Some(&p), Calendar::default(), 1, unix(NOON)).credits_remaining, Some(2));
    let twice = CreditPlan { topped_up: 12, ..p };
    assert_eq!(charge(&mut c, Some(&twice), Calendar::default(), 1, unix(NOON)).credits_remaining, Some(8));
}

#[test]
fn a_set_starts_again_and_an_older_revision_cannot_undo_it() {
    let mut c = Counter::default();
    let old = CreditPlan { topped_up: 3, ..plan(10) };
    assert_eq!(charge(&mut c, Some(&old), Calendar::default(), 1, unix(NOON)).credits_remaining, Some(12));
    let set = CreditPlan { revision: 1, ..plan(100) };
    assert_eq!(charge(&mut c, Some(&set), Calendar::default(), 1, unix(NOON)).credits_remaining, Some(99));
    assert_eq!(charge(&mut c, Some(&old), Calendar::default(), 1, unix(NOON)).credits_remaining, Some(98));
}

#[test]
fn a_day_quota_rolls_over_at_midnight_utc_exactly() {
    let cal = Calendar { day: Some(2), month: None };
    let mut c = Counter::default();
    let midnight = datetime!(2026-03-06 00:00 UTC);
    let before = (midnight - time::Duration::nanoseconds(1)).unix_timestamp();
    assert_eq!(charge(&mut c, None, cal, 1, unix(NOON)).quota_remaining, Some(1));
    assert_eq!(charge(&mut c, None, cal, 1, unix(NOON)).quota_remaining, Some(0));
    let o = charge(&mut c, None, cal, 1, before);
    assert_eq!((o.verdict, o.quota_reset, o.retry_after()), (Verdict::QuotaExceeded, Some(1), Some(1)));
    let o = charge(&mut c, None, cal, 1, unix(midnight));
    assert_eq!((o.verdict, o.quota_remaining, o.quota_reset), (Verdict::Allowed, Some(1), Some(86_400)));
}

#[test]
fn the_month_quota_binds_across_days_and_a_quota_refusal_spends_no_credits() {
    let cal = Calendar { day: Some(10), month: Some(3) };
    let p = plan(100);
    let mut c = Counter::default();
    for day in 1..=3 {
        let t = unix(datetime!(2026-03-01 12:00 UTC)) + (day - 1) * 86_400;
        assert_eq!(charge(&mut c, Some(&p), cal, 1, t).verdict, Verdict::Allowed);
    }
    let t = unix(datetime!(2026-03-04 12:00 UTC));
    let o = charge(&mut c, Some(&p), cal, 1, t);
    assert_eq!((o.verdict, o.credits_remaining, o.quota_remaining), (Verdict::QuotaExceeded, Some(97), Some(0)));
    assert_eq!(o.quota_reset, Some(u64::try_from(unix(datetime!(2026-04-01 00:00 UTC)) - t).unwrap()));
    let o = charge(&mut c, Some(&p), cal, 1, unix(datetime!(2026-04-01 00:00 UTC)));
    assert_eq!(o.verdict, Verdict::Allowed);
}

#[test]
fn a_key_quota_overrides_its_tier_field_by_field() {
    let tier = Calendar { day: Some(100), month: Some(1000) };
    let key = Calendar { day: Some(5), month: None };
    assert_eq!(key.over(tier), Calendar { day: Some(5), month: Some(1000) });
    assert!(Calendar::default().is_none());
}

#[test]
fn a_refill_forfeits_top_ups_even_when_a_stale_replica_triggers_it() {
    let refill = Refill { amount: 10, interval: Interval::Daily, at_secs: 0 };
    let stale = CreditPlan { refill: Some(refill), ..plan(1) };
    let fresh = CreditPlan { topped_up: 5, ..stale };
    let mut c = Counter::default();
    assert_eq!(charge(&mut c, Some(&fresh), Calendar::default(), 1, unix(NOON)).credits_remaining, Some(5));
    let tomorrow = unix(NOON) + 86_400;
    assert_eq!(charge(&mut c, Some(&stale), Calendar::default(), 1, tomorrow).credits_remaining, Some(9));
    let o = charge(&mut c, Some(&fresh), Calendar::default(), 1, tomorrow);
    assert_eq!(o.credits_remaining, Some(8), "yesterday's top-up is not added again");
}
