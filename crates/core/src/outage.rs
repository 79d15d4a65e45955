//! Static stability: when a refresh fails for a transient reason (the workspace is down,
//! rate-limiting or slow) while a credential that the server still accepts is at hand, that
//! credential is served and the refresh is tried again after a back-off, not on every request.
//!
//! The back-off starts at [`FIRST_RETRY`] and doubles up to [`LAST_RETRY`], but never waits past
//! half of the time the credential may still be served, so that a workspace that comes back is
//! noticed before the credential runs out.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The first wait after a failed refresh.
pub(crate) const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two refresh attempts.
pub(crate) const LAST_RETRY: Duration = Duration::from_secs(60);
/// The shortest wait, also close to the end of the credential's life.
const MIN_RETRY: Duration = Duration::from_millis(250);

/// Failed refreshes of one instance: when the next may start.
#[derive(Debug, Default)]
pub(crate) struct Outage(Mutex<Option<Backoff>>);

#[derive(Clone, Copy, Debug)]
struct Backoff {
    next_try: DateTime<Utc>,
    delay: Duration,
}

impl Outage {
    fn state(&self) -> std::sync::MutexGuard<'_, Option<Backoff>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a refresh failed recently and the next one should not start yet.
    pub fn waiting(&self, now: DateTime<Utc>) -> bool {
        self.state().is_some_and(|b| now < b.next_try)
    }

    /// Records a failed refresh at `now` of a credential served until `serve_until`; returns the
    /// wait before the next attempt.
    pub fn failed(&self, now: DateTime<Utc>, serve_until: DateTime<Utc>) -> Duration {
        let mut state = self.state();
        let delay = state
            .map_or(FIRST_RETRY, |b| b.delay.saturating_mul(2))
            .min(LAST_RETRY);
        let left = (serve_until - now).to_std().unwrap_or(Duration::ZERO);
        let wait = delay.min(left / 2).max(MIN_RETRY);
        let next_try = TimeDelta::from_std(wait)
            .ok()
            .and_then(|w| now.checked_add_signed(w))
            .unwrap_or(now);
        *state = Some(Backoff { next_try, delay });
        wait
    }

    /// Takes in the back-off another instance recorded in the store (its next try and its last
    /// wait), when it is further along than this instance's own: the next failure here doubles
    /// from it, and no attempt starts before its next try.
    pub fn adopt(&self, next_try: DateTime<Utc>, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        let mut state = self.state();
        if state.is_none_or(|b| b.delay < delay || b.next_try < next_try) {
            let mine = state.map_or(Duration::ZERO, |b| b.delay);
            *state = Some(Backoff {
                next_try: state.map_or(next_try, |b| b.next_try.max(next_try)),
                delay: mine.max(delay),
            });
        }
    }

    /// The wait of the last failure (zero when none).
    pub fn delay(&self) -> Duration {
        self.state().map_or(Duration::ZERO, |b| b.delay)
    }

    /// A refresh succeeded: the next failure starts the back-off afresh.
    pub fn clear(&self) {
        *self.state() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_770_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn backs_off_doubling_to_a_cap_and_clears() {
        let o = Outage::default();
        assert!(!o.waiting(t(0)));
        let far = t(3600);
        let waits: Vec<u64> = (0..9).map(|_| o.failed(t(0), far).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert!(o.waiting(t(59)));
        assert!(!o.waiting(t(60)), "due at exactly the wait");
        o.clear();
        assert!(!o.waiting(t(0)));
        assert_eq!(o.failed(t(0), far), FIRST_RETRY, "afresh after a success");
    }

    #[test]
    fn a_back_off_read_from_the_store_is_doubled_from() {
        let o = Outage::default();
        o.adopt(t(10), Duration::from_secs(8));
        assert!(o.waiting(t(9)) && !o.waiting(t(10)));
        assert_eq!(o.failed(t(10), t(3600)), Duration::from_secs(16));
        // An older, shorter one changes nothing.
        o.adopt(t(0), Duration::from_secs(2));
        assert_eq!(o.delay(), Duration::from_secs(16));
        assert!(o.waiting(t(25)));
        o.adopt(t(0), Duration::ZERO);
        assert_eq!(o.delay(), Duration::from_secs(16));
    }

    #[test]
    fn never_waits_past_half_of_what_is_left() {
        let o = Outage::default();
        for _ in 0..5 {
            o.failed(t(0), t(3600));
        }
        // 32 s would be next; 6 s are left of the credential: try again in 3 s.
        assert_eq!(o.failed(t(0), t(6)), Duration::from_secs(3));
        assert_eq!(o.failed(t(0), t(0)), MIN_RETRY, "a floor, never zero");
        assert_eq!(o.failed(t(10), t(0)), MIN_RETRY, "past the end");
    }
}
