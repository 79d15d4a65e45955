//! Which failures are retried, and for how long.

use std::time::Duration;

use http::HeaderMap;

/// Bounds on retrying the Databricks API and the first database connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The time budget across all attempts and waits; a wait that would exceed it is not made.
    pub max_total: Duration,
    /// Wait when the server sends no `Retry-After`, and after a network error.
    pub default_delay: Duration,
    /// A larger `Retry-After` is capped to this.
    pub max_delay: Duration,
    /// Up to this much is added at random to every wait, so that instances that failed
    /// together do not retry together.
    pub max_jitter: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            max_total: Duration::from_secs(20),
            default_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            max_jitter: Duration::from_millis(250),
        }
    }
}

/// Only these statuses are retried: the rest fail at once (a 4xx will not fix itself, and a 500
/// may have had effects).
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// A transport failure (no HTTP answer) that no retry can fix, with what to do about it:
/// the host does not allow the destination, the name does not resolve, the certificate was
/// refused. `None`: it may pass (refused, reset, timed out).
pub(crate) fn transport_configuration_error(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    if m.contains("httprequestdenied")
        || m.contains("not allowed")
        || m.contains("not permitted")
        || m.contains("allowed_outbound_hosts")
    {
        Some(
            "the host does not allow it: add the workspace URL (e.g. \"{{ databricks_host }}\") to `allowed_outbound_hosts` in spin.toml, and check `databricks_host`",
        )
    } else if m.contains("dnserror")
        || m.contains("dns error")
        || m.contains("destinationnotfound")
        || m.contains("name or service not known")
        || m.contains("failed to lookup")
    {
        Some("the host name does not resolve: check `databricks_host`")
    } else if m.contains("tlscertificateerror")
        || m.contains("certificate")
        || m.contains("unknownissuer")
    {
        Some(
            "its TLS certificate was refused: check `databricks_host` (a workspace URL, not a proxy)",
        )
    } else {
        None
    }
}

/// `Retry-After` as integer seconds. The HTTP-date form is not used by Databricks and is ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl RetryPolicy {
    /// `delay` plus a random part of [`RetryPolicy::max_jitter`].
    pub fn jittered(&self, delay: Duration) -> Duration {
        let max = self.max_jitter.as_millis() as u64;
        if max == 0 {
            return delay;
        }
        let mut b = [0u8; 8];
        if getrandom::fill(&mut b).is_err() {
            return delay;
        }
        delay + Duration::from_millis(u64::from_le_bytes(b) % (max + 1))
    }

    /// The wait before the next attempt, or `None` to give up. `attempt` is the number of
    /// attempts made so far and `elapsed` the time spent since the first.
    pub fn next_delay(
        &self,
        attempt: u32,
        elapsed: Duration,
        server_hint: Option<Duration>,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let delay = server_hint
            .unwrap_or(self.default_delay)
            .min(self.max_delay);
        (elapsed + delay <= self.max_total).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_429_and_gateway_errors_are_retried() {
        for s in [429, 502, 503, 504] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 500, 501] {
            assert!(!is_retryable_status(s), "{s}");
        }
    }

    #[test]
    fn retry_after_is_integer_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
        for odd in ["-1", "1.5", "", "99999999999999999999999", "soon"] {
            h.insert("retry-after", odd.parse().unwrap());
            assert_eq!(retry_after(&h), None, "{odd:?}: the default applies");
        }
        // Huge but readable: capped by the policy, not here.
        h.insert("retry-after", "86400".parse().unwrap());
        assert_eq!(
            RetryPolicy::default().next_delay(1, Duration::ZERO, retry_after(&h)),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn jitter_is_bounded() {
        let p = RetryPolicy::default();
        for _ in 0..100 {
            let d = p.jittered(Duration::from_secs(1));
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_millis(1250),
                "{d:?}"
            );
        }
    }

    #[test]
    fn bounded_by_attempts_and_time() {
        let p = RetryPolicy::default();
        let s = Duration::from_secs;
        assert_eq!(p.next_delay(1, s(0), None), Some(s(1)));
        assert_eq!(p.next_delay(1, s(0), Some(s(2))), Some(s(2)));
        assert_eq!(p.next_delay(1, s(0), Some(s(600))), Some(s(10)), "capped");
        assert_eq!(p.next_delay(4, s(0), None), None, "attempts exhausted");
        assert_eq!(
            p.next_delay(2, s(15), Some(s(6))),
            None,
            "would pass the budget"
        );
        assert_eq!(
            p.next_delay(2, s(15), Some(s(5))),
            Some(s(5)),
            "exactly on budget"
        );
    }
}
