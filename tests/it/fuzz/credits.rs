//! Credits and calendar quotas: the `HH:MM` refill time never panics and round-trips, and a
//! counter conserves credits whatever sequence of charges, top-ups, sets, clock moves and stale
//! replicas (a table one change behind) it sees: what it lets through plus what it holds is
//! exactly what it was given, never more.

use keygate::ratelimit::credits::period::{format_time_of_day, parse_time_of_day};
use keygate::ratelimit::credits::{decide, Calendar, Charge, Counter, CreditPlan, Interval, Refill, Verdict};

use super::{ITERATIONS, TIME};

#[test]
fn time_of_day_bytes() {
    bolero::check!(name = "time_of_day_bytes").with_iterations(ITERATIONS).with_test_time(TIME).for_each(
        |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            if let Ok(secs) = parse_time_of_day(&text) {
                assert!(secs < 86_400, "{text:?}");
                assert_eq!(format_time_of_day(secs), text, "only the canonical HH:MM is accepted");
            }
        },
    );
}

const REFILL: u64 = 7;
const DAY_QUOTA: u64 = 40;

/// One step: (kind, amount, stale). Kind 0-3: a charge of `amount % 4` (0 included), by a replica
/// one table change behind when `stale`; 4: a top-up; 5: a set; 6: the clock moves on.
type Step = (u8, u16, bool);

#[test]
fn credits_props() {
    bolero::check!(name = "credits_props")
        .with_iterations(ITERATIONS)
        .with_test_time(TIME)
        .with_type::<(u16, bool, Vec<Step>)>()
        .for_each(|(balance, refills, steps)| {
            let refill = refills.then_some(Refill { amount: REFILL, interval: Interval::Daily, at_secs: 3600 });
            let mut plan = CreditPlan { balance: u64::from(*balance % 50), revision: 1, topped_up: 0, refill };
            // Each revision's balance and the highest top-up total issued under it.
            let mut issued = vec![(0, 0), (plan.balance, 0)];
            let (mut stale, mut c, mut now) = (plan, Counter::default(), 1_780_000_000_i64);
            let mut day_spent = (now.div_euclid(86_400), 0);
            for (kind, amount, behind) in steps.iter().take(64) {
                match kind % 7 {
                    4 => {
                        stale = plan;
                        plan.topped_up += u64::from(amount % 10);
                        issued[plan.revision as usize].1 = plan.topped_up;
                    }
                    5 => {
                        stale = plan;
                        plan = CreditPlan {
                            balance: u64::from(amount % 50),
                            revision: plan.revision + 1,
                            topped_up: 0,
                            ..plan
                        };
                        issued.push((plan.balance, 0));
                    }
                    6 => now += i64::from(*amount % 1500) * 60,
                    _ => {
                        let cost = u64::from(amount % 4);
                        let asked = if *behind { &stale } else { &plan };
                        let calendar = Calendar { day: Some(DAY_QUOTA), month: None };
                        let before = c;
                        let verdict = decide(&mut c, &Charge { plan: Some(asked), calendar, cost, now }.args());
                        let spent = if verdict == Verdict::Allowed { cost } else { 0 };
                        conserved(&before, &c, spent, &issued, refills);
                        if now.div_euclid(86_400) != day_spent.0 {
                            day_spent = (now.div_euclid(86_400), 0);
                        }
                        day_spent.1 += spent;
                        assert!(day_spent.1 <= DAY_QUOTA, "the day quota held");
                    }
                }
            }
        });
}

/// What a counter holds after a charge, plus what it let through, is what it held plus what it
/// was given in between: a top-up it had not added, a refill, or a new revision's balance.
fn conserved(before: &Counter, after: &Counter, spent: u64, issued: &[(u64, u64)], refills: &bool) {
    let rev = after.revision.expect("a charged counter has a revision");
    assert!(before.revision.is_none_or(|b| rev >= b), "the revision never goes back");
    assert!(after.topped_up <= issued[rev as usize].1, "no top-up that was never issued");
    let held = after.remaining + spent;
    if before.revision != Some(rev) {
        assert_eq!(held, issued[rev as usize].0 + after.topped_up, "a new revision starts at its balance");
    } else if after.period != before.period {
        assert!(*refills && after.period > before.period, "periods move forward, only with a refill");
        assert_eq!(held, REFILL, "a refill sets the balance; top-ups before it are forfeited");
        assert!(after.topped_up >= before.topped_up, "a top-up total never goes back");
    } else {
        assert!(after.topped_up >= before.topped_up, "a top-up total never goes back");
        assert_eq!(held, before.remaining + after.topped_up - before.topped_up, "credits are conserved");
    }
}
