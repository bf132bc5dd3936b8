//! Rate limiting for log lines that clients can cause (junk datagrams, refused connections,
//! bad records): at most one line per reason per interval, carrying how many were
//! suppressed since the last one, so a flood of junk cannot flood the log. Counting every
//! event is the metrics' job.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One line per reason per this interval.
pub const INTERVAL: Duration = Duration::from_secs(10);

static LAST: Mutex<Option<HashMap<&'static str, (Instant, u64)>>> = Mutex::new(None);

/// Whether a line about `reason` may be logged now; if so, how many were suppressed since
/// the last one.
pub fn allow(reason: &'static str) -> Option<u64> {
    allow_at(reason, Instant::now(), INTERVAL)
}

fn allow_at(reason: &'static str, now: Instant, interval: Duration) -> Option<u64> {
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let map = last.get_or_insert_with(HashMap::new);
    match map.get_mut(reason) {
        Some((at, suppressed)) if now.duration_since(*at) < interval => {
            *suppressed += 1;
            None
        }
        Some((at, suppressed)) => {
            let n = *suppressed;
            *at = now;
            *suppressed = 0;
            Some(n)
        }
        None => {
            map.insert(reason, (now, 0));
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_then_the_count_of_those_suppressed() {
        let t0 = Instant::now();
        let i = Duration::from_secs(10);
        assert_eq!(allow_at("test_reason", t0, i), Some(0));
        for _ in 0..5 {
            assert_eq!(
                allow_at("test_reason", t0 + Duration::from_secs(1), i),
                None
            );
        }
        assert_eq!(
            allow_at("other_reason", t0, i),
            Some(0),
            "reasons are apart"
        );
        assert_eq!(allow_at("test_reason", t0 + i, i), Some(5));
    }
}
