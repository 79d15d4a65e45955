//! Which failures are retried, for how long, and the one loop that retries them: calls to the
//! Databricks API and Postgres connects both run through [`run`].

use std::future::Future;
use std::time::Duration;

use http::HeaderMap;

use crate::host::{Clock, HostError, HostFailure};
use crate::log;

/// Bounds on retrying the Databricks API and the first database connection.
///
/// ```
/// use std::time::Duration;
/// let policy = lakebase::RetryPolicy::default()
///     .max_attempts(2)
///     .max_total(Duration::from_secs(5));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub(crate) max_attempts: u32,
    /// The time budget across all attempts and waits; a wait that would exceed it is not made.
    pub(crate) max_total: Duration,
    /// Wait when the server sends no `Retry-After`, and after a network error.
    pub(crate) default_delay: Duration,
    /// A larger `Retry-After` is capped to this.
    pub(crate) max_delay: Duration,
    /// Up to this much is added at random to every wait, so that instances that failed
    /// together do not retry together.
    pub(crate) max_jitter: Duration,
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
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// What to do about a transport failure (no HTTP answer) that no retry can fix: the host does
/// not allow the destination, the name does not resolve, the certificate was refused. `None`:
/// it may pass (refused, reset, timed out). Decided on the host's classification; a host that
/// gives text only ([`HostFailure::Other`]) is read by its words.
pub(crate) fn transport_configuration_error(e: &HostError) -> Option<&'static str> {
    const NOT_ALLOWED: &str = "the host does not allow it: add the workspace URL (e.g. \"{{ databricks_host }}\") to `allowed_outbound_hosts` in spin.toml (Spin) or to the workload's `allowedHosts` (wasmCloud), and check `databricks_host`";
    const NOT_RESOLVED: &str = "the host name does not resolve: check `databricks_host`";
    const CERTIFICATE: &str =
        "its TLS certificate was refused: check `databricks_host` (a workspace URL, not a proxy)";
    match e.failure {
        HostFailure::NotAllowed => return Some(NOT_ALLOWED),
        HostFailure::NotFound => return Some(NOT_RESOLVED),
        HostFailure::Certificate => return Some(CERTIFICATE),
        HostFailure::Timeout => return None,
        _ => {}
    }
    let m = e.message.to_ascii_lowercase();
    if m.contains("httprequestdenied")
        || m.contains("not allowed")
        || m.contains("not permitted")
        || m.contains("allowed_outbound_hosts")
    {
        Some(NOT_ALLOWED)
    } else if m.contains("dnserror")
        || m.contains("dns error")
        || m.contains("destinationnotfound")
        || m.contains("name or service not known")
        || m.contains("failed to lookup")
    {
        Some(NOT_RESOLVED)
    } else if m.contains("tlscertificateerror")
        || m.contains("certificate")
        || m.contains("unknownissuer")
    {
        Some(CERTIFICATE)
    } else {
        None
    }
}

/// `Retry-After` as integer seconds. The HTTP-date form is not used by Databricks and is ignored.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl RetryPolicy {
    /// Attempts in all, the first included (default 4; at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The time budget across all attempts and waits (default 20 s).
    pub fn max_total(mut self, total: Duration) -> Self {
        self.max_total = total;
        self
    }

    /// The wait when the server sends no `Retry-After`, and after a network error (default 1 s).
    pub fn default_delay(mut self, delay: Duration) -> Self {
        self.default_delay = delay;
        self
    }

    /// The longest wait, whatever `Retry-After` says (default 10 s).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Up to this much is added at random to every wait (default 250 ms).
    pub fn max_jitter(mut self, jitter: Duration) -> Self {
        self.max_jitter = jitter;
        self
    }

    /// `delay` plus a random part of [`RetryPolicy::max_jitter`].
    pub(crate) fn jittered(&self, delay: Duration) -> Duration {
        let max = u64::try_from(self.max_jitter.as_millis()).unwrap_or(u64::MAX);
        if max == 0 {
            return delay;
        }
        let mut b = [0u8; 8];
        if getrandom::fill(&mut b).is_err() {
            return delay;
        }
        delay.saturating_add(Duration::from_millis(
            u64::from_le_bytes(b) % max.saturating_add(1),
        ))
    }

    /// The wait before the next attempt, or `None` to give up. `attempt` is the number of
    /// attempts made so far and `elapsed` the time spent since the first.
    pub(crate) fn next_delay(
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
        // Checked: a custom `max_delay` and a huge `Retry-After` must not overflow.
        (elapsed.saturating_add(delay) <= self.max_total).then_some(delay)
    }
}

/// What one attempt came to.
pub(crate) enum Attempt<T, E> {
    /// Done: success, or a failure that no retry can fix.
    Done(Result<T, E>),
    /// A failure that may pass: `failure` says what happened (for the log and the final
    /// error), `hint` is the server's `Retry-After`.
    Again {
        failure: String,
        hint: Option<Duration>,
    },
}

/// Why [`run`] stopped without success.
#[derive(Debug)]
pub(crate) enum Stop<E> {
    /// An attempt failed in a way no retry can fix.
    Fatal(E),
    /// Attempts or time ran out; the last failure, how many attempts, how long.
    GaveUp {
        failure: String,
        attempts: u32,
        elapsed: Duration,
    },
}

/// Runs `attempt` until it is done or the policy gives up, waiting on the host's timer (with
/// jitter) between attempts.
pub(crate) async fn run<C: Clock, T, E, F: Future<Output = Attempt<T, E>>>(
    clock: &C,
    policy: &RetryPolicy,
    attempt: impl FnMut() -> F,
) -> Result<T, Stop<E>> {
    run_since(clock, policy, clock.now(), attempt).await
}

/// [`run`], with the time budget counted from `start` (a clock reading the caller just took):
/// an attempt that succeeds reads no clock.
pub(crate) async fn run_since<C: Clock, T, E, F: Future<Output = Attempt<T, E>>>(
    clock: &C,
    policy: &RetryPolicy,
    start: chrono::DateTime<chrono::Utc>,
    mut attempt: impl FnMut() -> F,
) -> Result<T, Stop<E>> {
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let (failure, hint) = match attempt().await {
            Attempt::Done(result) => return result.map_err(Stop::Fatal),
            Attempt::Again { failure, hint } => (failure, hint),
        };
        let elapsed = (clock.now() - start).to_std().unwrap_or(Duration::ZERO);
        match policy.next_delay(attempts, elapsed, hint) {
            Some(delay) => {
                let delay = policy.jittered(delay);
                log::info(&format!(
                    "{failure}; retrying in {:.2}s",
                    delay.as_secs_f32()
                ));
                clock.sleep(delay).await;
            }
            None => {
                return Err(Stop::GaveUp {
                    failure,
                    attempts,
                    elapsed,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_from_outside_never_overflow() {
        let huge = RetryPolicy::default()
            .max_delay(Duration::MAX)
            .max_total(Duration::MAX)
            .max_jitter(Duration::MAX);
        assert_eq!(
            huge.next_delay(1, Duration::MAX, Some(Duration::MAX)),
            Some(Duration::MAX)
        );
        assert!(huge.jittered(Duration::MAX) >= Duration::MAX);
        assert!(huge.jittered(Duration::from_secs(1)) >= Duration::from_secs(1));
    }

    use super::*;

    /// A clock that moves only when slept on, and records the sleeps.
    struct StepClock {
        now: std::cell::Cell<chrono::DateTime<chrono::Utc>>,
        sleeps: std::cell::RefCell<Vec<Duration>>,
    }

    impl Clock for StepClock {
        fn now(&self) -> chrono::DateTime<chrono::Utc> {
            self.now.get()
        }
        async fn sleep(&self, d: Duration) {
            self.sleeps.borrow_mut().push(d);
            self.now.set(self.now.get() + d);
        }
    }

    fn clock() -> StepClock {
        StepClock {
            now: std::cell::Cell::new(chrono::DateTime::from_timestamp(0, 0).unwrap()),
            sleeps: Default::default(),
        }
    }

    #[test]
    fn the_runner_retries_until_done_fatal_or_out_of_budget() {
        use futures::executor::block_on;
        let policy = RetryPolicy::default().max_jitter(Duration::ZERO);
        let again = |hint| Attempt::<u32, &str>::Again {
            failure: "down".into(),
            hint,
        };

        // Two failures (the second with a server hint), then success.
        let c = clock();
        let mut n = 0;
        let out = block_on(run(&c, &policy, || {
            n += 1;
            let step = match n {
                1 => again(None),
                2 => again(Some(Duration::from_secs(3))),
                _ => Attempt::Done(Ok(n)),
            };
            async move { step }
        }));
        assert_eq!(out.unwrap(), 3);
        assert_eq!(
            *c.sleeps.borrow(),
            vec![Duration::from_secs(1), Duration::from_secs(3)]
        );

        // A fatal failure stops at once.
        let c = clock();
        let out = block_on(run(&c, &policy, || async {
            Attempt::<u32, &str>::Done(Err("bad"))
        }));
        assert!(matches!(out, Err(Stop::Fatal("bad"))));
        assert!(c.sleeps.borrow().is_empty());

        // Attempts run out: the last failure, the count and the time spent.
        let c = clock();
        let out = block_on(run(&c, &policy, || async { again(None) }));
        match out {
            Err(Stop::GaveUp {
                failure,
                attempts,
                elapsed,
            }) => {
                assert_eq!((failure.as_str(), attempts), ("down", 4));
                assert_eq!(elapsed, Duration::from_secs(3));
            }
            other => panic!("{other:?}"),
        }
    }

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
