//! Timestamps the way systemd prints them: "Sun 2026-11-29 04:57:55 UTC" and
//! "3min 2s ago".

use std::time::{SystemTime, UNIX_EPOCH};

const USEC_PER_SEC: u64 = 1_000_000;
const USEC_PER_MIN: u64 = 60 * USEC_PER_SEC;
const USEC_PER_HOUR: u64 = 60 * USEC_PER_MIN;
const USEC_PER_DAY: u64 = 24 * USEC_PER_HOUR;
const USEC_PER_WEEK: u64 = 7 * USEC_PER_DAY;
const USEC_PER_MONTH: u64 = 2_629_800 * USEC_PER_SEC;
const USEC_PER_YEAR: u64 = 31_557_600 * USEC_PER_SEC;

/// Microseconds since the epoch, now.
pub fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Formats a realtime timestamp in local time as systemd's
/// `FORMAT_TIMESTAMP` does. Empty for 0 (unset).
pub fn format_timestamp(usec: u64) -> String {
    if usec == 0 {
        return String::new();
    }
    let secs = (usec / USEC_PER_SEC) as libc::time_t;
    // SAFETY: localtime_r and strftime write only into the buffers we pass.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return String::new();
        }
        let mut buf = [0u8; 64];
        let fmt = c"%a %Y-%m-%d %H:%M:%S %Z";
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// How long ago `then` was, relative to `now`, as systemd's
/// `format_timestamp_relative()` words it ("5min ago", "1h 3min ago",
/// "left" for the future).
pub fn format_relative(then: u64, now: u64) -> String {
    if then == 0 {
        return String::new();
    }
    let (d, suffix) = if now >= then {
        (now - then, "ago")
    } else {
        (then - now, "left")
    };
    let plural = |n: u64, one: &str, many: &str| {
        if n == 1 {
            format!("{n} {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let body = if d >= USEC_PER_YEAR {
        let years = d / USEC_PER_YEAR;
        let months = (d % USEC_PER_YEAR) / USEC_PER_MONTH;
        format!(
            "{} {}",
            plural(years, "year", "years"),
            plural(months, "month", "months")
        )
    } else if d >= USEC_PER_MONTH {
        let months = d / USEC_PER_MONTH;
        let days = (d % USEC_PER_MONTH) / USEC_PER_DAY;
        format!(
            "{} {}",
            plural(months, "month", "months"),
            plural(days, "day", "days")
        )
    } else if d >= USEC_PER_WEEK {
        let weeks = d / USEC_PER_WEEK;
        let days = (d % USEC_PER_WEEK) / USEC_PER_DAY;
        format!(
            "{} {}",
            plural(weeks, "week", "weeks"),
            plural(days, "day", "days")
        )
    } else if d >= 2 * USEC_PER_DAY {
        format!("{} days", d / USEC_PER_DAY)
    } else if d >= 25 * USEC_PER_HOUR {
        format!("1 day {}h", (d - USEC_PER_DAY) / USEC_PER_HOUR)
    } else if d >= 6 * USEC_PER_HOUR {
        format!("{}h", d / USEC_PER_HOUR)
    } else if d >= USEC_PER_HOUR {
        format!(
            "{}h {}min",
            d / USEC_PER_HOUR,
            (d % USEC_PER_HOUR) / USEC_PER_MIN
        )
    } else if d >= 5 * USEC_PER_MIN {
        format!("{}min", d / USEC_PER_MIN)
    } else if d >= USEC_PER_MIN {
        format!(
            "{}min {}s",
            d / USEC_PER_MIN,
            (d % USEC_PER_MIN) / USEC_PER_SEC
        )
    } else if d >= USEC_PER_SEC {
        format!("{}s", d / USEC_PER_SEC)
    } else if d >= 1000 {
        format!("{}ms", d / 1000)
    } else if d > 0 {
        format!("{d}us")
    } else {
        return "now".to_string();
    };
    format!("{body} {suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_wording() {
        let now = 10 * USEC_PER_YEAR;
        let ago = |d: u64| format_relative(now - d, now);
        assert_eq!(ago(0), "now");
        assert_eq!(ago(500), "500us ago");
        assert_eq!(ago(1500), "1ms ago");
        assert_eq!(ago(42 * USEC_PER_SEC), "42s ago");
        assert_eq!(ago(3 * USEC_PER_MIN + 2 * USEC_PER_SEC), "3min 2s ago");
        assert_eq!(ago(7 * USEC_PER_MIN), "7min ago");
        assert_eq!(ago(USEC_PER_HOUR + 3 * USEC_PER_MIN), "1h 3min ago");
        assert_eq!(ago(7 * USEC_PER_HOUR), "7h ago");
        assert_eq!(ago(26 * USEC_PER_HOUR), "1 day 2h ago");
        assert_eq!(ago(3 * USEC_PER_DAY), "3 days ago");
        assert_eq!(ago(USEC_PER_WEEK + USEC_PER_DAY), "1 week 1 day ago");
        assert_eq!(ago(USEC_PER_YEAR), "1 year 0 months ago");
        assert_eq!(format_relative(now + 42 * USEC_PER_SEC, now), "42s left");
        assert_eq!(format_relative(0, now), "");
    }

    #[test]
    fn absolute_has_weekday_date_and_zone() {
        assert_eq!(format_timestamp(0), "");
        let s = format_timestamp(1_700_000_000 * USEC_PER_SEC);
        // 2023-11-14 22:13:20 UTC; local zone may shift the day.
        assert!(s.contains("2023-11-1"), "{s}");
        assert_eq!(s.split(' ').count(), 4, "{s}");
    }
}
