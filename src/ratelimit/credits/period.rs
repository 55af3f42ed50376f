//! Calendar periods in UTC, as pure functions of a wall-clock reading (Unix seconds): the day
//! starts at 00:00 UTC, the month on the 1st at 00:00 UTC, and a refill at a fixed UTC time of
//! day (daily) or of the 1st (monthly). A period is an index that only ever moves forward, so a
//! quota never drifts with use (Tyk's does: its period starts at the first request).

use time::{Date, Month, OffsetDateTime};

pub const DAY: i64 = 86_400;

/// How often a key's credits are refilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interval {
    Daily,
    /// On the 1st of each month.
    Monthly,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Daily => "daily",
            Interval::Monthly => "monthly",
        }
    }
}

/// A refill: the balance is set to `amount` at `at_secs` after 00:00 UTC, every day or on the
/// 1st of every month (top-ups made before it are not carried over, as Unkey's refill).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refill {
    pub amount: u64,
    pub interval: Interval,
    /// Seconds after midnight UTC, below one day.
    pub at_secs: u32,
}

impl Refill {
    /// The refill period `unix` falls in: it changes exactly at each refill instant.
    pub fn period(&self, unix: i64) -> i64 {
        let shifted = unix - i64::from(self.at_secs);
        match self.interval {
            Interval::Daily => day_index(shifted),
            Interval::Monthly => month_index(shifted),
        }
    }

    /// The next refill instant after `unix` (Unix seconds).
    pub fn next(&self, unix: i64) -> i64 {
        let p = self.period(unix) + 1;
        let start = match self.interval {
            Interval::Daily => p * DAY,
            Interval::Monthly => month_start(p),
        };
        start + i64::from(self.at_secs)
    }
}

/// Days since 1970-01-01 UTC.
pub fn day_index(unix: i64) -> i64 {
    unix.div_euclid(DAY)
}

/// Months since year 0 (year * 12 + month - 1).
pub fn month_index(unix: i64) -> i64 {
    let d = OffsetDateTime::from_unix_timestamp(unix).map_or(OffsetDateTime::UNIX_EPOCH, |d| d);
    i64::from(d.year()) * 12 + i64::from(u8::from(d.month())) - 1
}

/// The first instant of month `index` (Unix seconds).
pub fn month_start(index: i64) -> i64 {
    let year = i32::try_from(index.div_euclid(12)).unwrap_or(9999);
    let month = Month::try_from(u8::try_from(index.rem_euclid(12) + 1).unwrap_or(1)).unwrap_or(Month::January);
    Date::from_calendar_date(year, month, 1).map_or(i64::MAX / 2, |d| d.midnight().assume_utc().unix_timestamp())
}

/// The next 00:00 UTC after `unix`.
pub fn next_day(unix: i64) -> i64 {
    (day_index(unix) + 1) * DAY
}

/// The next 1st of a month, 00:00 UTC, after `unix`.
pub fn next_month(unix: i64) -> i64 {
    month_start(month_index(unix) + 1)
}

/// `HH:MM` (UTC) as seconds after midnight.
pub fn parse_time_of_day(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time of day (use HH:MM, UTC)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60)
}

/// Seconds after midnight as `HH:MM`.
pub fn format_time_of_day(secs: u32) -> String {
    format!("{:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn unix(t: OffsetDateTime) -> i64 {
        t.unix_timestamp()
    }

    /// The last instant of a second before `t` as the clock reads it: 1 ns before floors to
    /// the previous whole second.
    fn just_before(t: OffsetDateTime) -> i64 {
        (t - time::Duration::nanoseconds(1)).unix_timestamp()
    }

    #[test]
    fn a_day_ends_at_midnight_utc_exactly() {
        let midnight = datetime!(2026-03-05 00:00 UTC);
        assert_eq!(day_index(just_before(midnight)) + 1, day_index(unix(midnight)));
        assert_eq!(next_day(just_before(midnight)), unix(midnight));
        assert_eq!(next_day(unix(midnight)), unix(datetime!(2026-03-06 00:00 UTC)));
    }

    #[test]
    fn a_month_ends_on_the_first_at_midnight_utc_including_february_and_new_year() {
        for (first, next) in [
            (datetime!(2026-03-01 00:00 UTC), datetime!(2026-04-01 00:00 UTC)),
            (datetime!(2028-02-01 00:00 UTC), datetime!(2028-03-01 00:00 UTC)),
            (datetime!(2026-12-01 00:00 UTC), datetime!(2027-01-01 00:00 UTC)),
        ] {
            assert_eq!(month_index(just_before(first)) + 1, month_index(unix(first)));
            assert_eq!(next_month(just_before(first)), unix(first));
            assert_eq!(next_month(unix(first)), unix(next));
            assert_eq!(month_start(month_index(unix(first))), unix(first));
        }
    }

    #[test]
    fn a_daily_refill_happens_at_its_utc_time_not_at_midnight() {
        let r = Refill { amount: 10, interval: Interval::Daily, at_secs: 6 * 3600 + 30 * 60 };
        let at = datetime!(2026-03-05 06:30 UTC);
        assert_eq!(r.period(just_before(at)) + 1, r.period(unix(at)));
        assert_eq!(r.period(unix(datetime!(2026-03-05 00:00 UTC))), r.period(just_before(at)));
        assert_eq!(r.next(just_before(at)), unix(at));
        assert_eq!(r.next(unix(at)), unix(datetime!(2026-03-06 06:30 UTC)));
    }

    #[test]
    fn a_monthly_refill_happens_on_the_first_at_its_utc_time() {
        let r = Refill { amount: 10, interval: Interval::Monthly, at_secs: 12 * 3600 };
        let at = datetime!(2026-04-01 12:00 UTC);
        assert_eq!(r.period(just_before(at)) + 1, r.period(unix(at)));
        assert_eq!(r.next(unix(datetime!(2026-04-01 11:00 UTC))), unix(at));
        assert_eq!(r.next(unix(at)), unix(datetime!(2026-05-01 12:00 UTC)));
    }

    #[test]
    fn the_period_does_not_move_with_use() {
        // Two readings in the same period give the same index whatever happened between.
        let r = Refill { amount: 1, interval: Interval::Daily, at_secs: 0 };
        let a = unix(datetime!(2026-03-05 00:00:01 UTC));
        let b = unix(datetime!(2026-03-05 23:59:59 UTC));
        assert_eq!(r.period(a), r.period(b));
    }

    #[test]
    fn times_of_day_parse_strictly() {
        assert_eq!(parse_time_of_day("00:00"), Ok(0));
        assert_eq!(parse_time_of_day("23:59"), Ok(86_340));
        for bad in ["24:00", "7:00", "07:60", "0700", "07:00:00", "", "aa:bb"] {
            assert!(parse_time_of_day(bad).is_err(), "{bad}");
        }
        assert_eq!(format_time_of_day(6 * 3600 + 5 * 60), "06:05");
    }
}
