//! Deadlines on host calls, measured by the host's own timers.
//!
//! Every outbound call is raced against [`Clock::sleep`]: a workspace that accepts a connection
//! and never answers, or a database that stalls at login, costs a bounded time, and the dropped
//! call is cancelled by the host. Waiting on a host timer is also what Spin's executor allows.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use futures::future::{Either, select};

use crate::host::{Clock, HostError, HostFailure};

/// One HTTP exchange with the workspace: connect, headers and the whole body.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// One Postgres connect (TCP, TLS and login).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After an open that succeeded, opens that start within this time go without a host timer of
/// their own, one at a time per instance ([`OpenWatch`]).
pub const UNTIMED_WINDOW: Duration = Duration::from_secs(5);
/// A whole credential load in one request: key-value, waiting for another instance's lease,
/// workspace token, look-ups, the mint and all their retries.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(25);
/// A refresh attempt made by a request that holds a credential the server still accepts (past
/// its reuse limit, within [`Credential::serve_until`](crate::Credential::serve_until)): that
/// request is served the credential it has after at most this long, whatever the workspace does,
/// and the refresh is tried again after a back-off (by whichever instance comes first).
pub const SERVE_FIRST_TIMEOUT: Duration = Duration::from_secs(1);
/// One key-value operation. A store that does not answer (Spin keeps retrying a Redis that is
/// down) is then treated as failing: logged and bypassed.
pub const KV_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest workspace answer read (credential answers are a few kilobytes). An [`Http`]
/// adapter may stop reading one byte past it and answer `Err`: the core refuses a larger answer.
///
/// [`Http`]: crate::host::Http
pub const MAX_BODY: usize = 1024 * 1024;

/// `future`'s output, or `None` if `limit` passed first (the future is then dropped).
///
/// The timer is armed only when `future` does not complete on its first poll: `select` polls
/// `future` first, and the sleep, an `async fn`, asks the host for a timer on its own first
/// poll. A call the host answers at once (a warm pooled connection) costs no host timer; one
/// that waits is bounded from that first poll on.
pub async fn within<C: Clock, T>(
    clock: &C,
    limit: Duration,
    future: impl Future<Output = T>,
) -> Option<T> {
    let future = pin!(future);
    let timer = pin!(clock.sleep(limit));
    match select(future, timer).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

/// After a key-value operation timed out, the store is skipped for this long (every request
/// would otherwise wait out [`KV_TIMEOUT`] several times).
pub const KV_BACKOFF: Duration = Duration::from_secs(30);

/// A key-value store whose every operation gives up after [`KV_TIMEOUT`]; after a timeout, the
/// store is skipped (fails at once) for [`KV_BACKOFF`]. So is it after an operation that failed
/// only once [`KV_TIMEOUT`] had passed: a host whose key-value calls block the instance (the
/// synchronous `wasi:keyvalue` of WASI 0.2) cannot be cut by the timer, and answers a store
/// that is down with its own client's timeout (5 s for wasmCloud's NATS), once per operation.
pub(crate) struct TimedKv<'a, K, C> {
    pub kv: &'a K,
    pub clock: &'a C,
    /// Unix milliseconds until which the store is skipped (shared by the instance).
    pub skip_until_ms: &'a std::sync::atomic::AtomicI64,
}

impl<K, C: Clock> TimedKv<'_, K, C> {
    async fn run<T>(&self, op: impl Future<Output = Result<T, HostError>>) -> Result<T, HostError> {
        use std::sync::atomic::Ordering;
        let now = self.clock.now().timestamp_millis();
        if now < self.skip_until_ms.load(Ordering::Relaxed) {
            return Err(HostError::new(
                HostFailure::Timeout,
                "skipped: it did not answer in time recently",
            ));
        }
        match within(self.clock, KV_TIMEOUT, op).await {
            Some(Err(e))
                if self.clock.now().timestamp_millis() - now >= KV_TIMEOUT.as_millis() as i64 =>
            {
                let until = self
                    .clock
                    .now()
                    .timestamp_millis()
                    .saturating_add(KV_BACKOFF.as_millis() as i64);
                self.skip_until_ms.store(until, Ordering::Relaxed);
                Err(HostError::new(
                    HostFailure::Timeout,
                    format!(
                        "{e} (after more than {} s; skipping the store for {} s)",
                        KV_TIMEOUT.as_secs(),
                        KV_BACKOFF.as_secs()
                    ),
                ))
            }
            Some(result) => result,
            None => {
                let until = now.saturating_add(KV_BACKOFF.as_millis() as i64);
                self.skip_until_ms.store(until, Ordering::Relaxed);
                Err(HostError::new(
                    HostFailure::Timeout,
                    format!(
                        "no answer within {} s; skipping the store for {} s",
                        KV_TIMEOUT.as_secs(),
                        KV_BACKOFF.as_secs()
                    ),
                ))
            }
        }
    }
}

impl<K: crate::host::Kv, C: Clock> crate::host::Kv for TimedKv<'_, K, C> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.run(self.kv.get(key)).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.run(self.kv.set(key, value)).await
    }

    async fn delete(&self, key: &str) -> Result<(), HostError> {
        self.run(self.kv.delete(key)).await
    }
}

/// Which Postgres opens race a host timer of their own.
///
/// An open is an asynchronous host call that waits for the server even when the host's pool
/// has a session (the pool checks it before handing it out), so [`within`] arms a timer for
/// every open; on Spin that costs about 5 % of a warm `SELECT 1` request. While the database
/// answers (an open of this instance succeeded within [`UNTIMED_WINDOW`]), one open at a time
/// goes untimed; every other open, every retry, and every open after a quiet spell are timed.
///
/// The price: when a database that answered until now stalls, the one untimed open then in
/// flight waits for the host's own limits (a client that gives up, `spin up --request-timeout`,
/// TCP timeouts) instead of [`CONNECT_TIMEOUT`]; it holds the untimed slot meanwhile, so the
/// instance's other opens are all timed and fail as before.
#[derive(Debug, Default)]
pub(crate) struct OpenWatch {
    /// Unix milliseconds at which the latest successful open started (0: none yet).
    last_ok_ms: AtomicI64,
    /// An untimed open is in flight.
    untimed: AtomicBool,
}

/// The untimed slot of an [`OpenWatch`], given back when dropped (the open ended or its
/// request was dropped).
pub(crate) struct Untimed<'a>(&'a AtomicBool);

impl Drop for Untimed<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl OpenWatch {
    /// The untimed slot for an open starting at `now_ms`, if the database answered recently and
    /// no other untimed open is in flight.
    pub fn untimed(&self, now_ms: i64) -> Option<Untimed<'_>> {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        let window = UNTIMED_WINDOW.as_millis() as i64;
        if last == 0 || !(last..last.saturating_add(window)).contains(&now_ms) {
            return None;
        }
        self.untimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        Some(Untimed(&self.untimed))
    }

    /// An open that started at `started_ms` succeeded.
    pub fn succeeded(&self, started_ms: i64) {
        self.last_ok_ms.fetch_max(started_ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use chrono::{DateTime, Utc};
    use futures::executor::block_on;

    use super::*;

    /// A clock whose sleeps never end, counting the timers asked of it (first polls).
    #[derive(Default)]
    struct CountingClock {
        timers: Cell<u32>,
    }

    impl Clock for CountingClock {
        fn now(&self) -> DateTime<Utc> {
            DateTime::from_timestamp(0, 0).unwrap()
        }
        async fn sleep(&self, _: Duration) {
            self.timers.set(self.timers.get() + 1);
            std::future::pending::<()>().await
        }
    }

    #[test]
    fn a_call_answered_at_once_arms_no_timer() {
        let clock = CountingClock::default();
        assert_eq!(
            block_on(within(&clock, CONNECT_TIMEOUT, async { 7 })),
            Some(7)
        );
        assert_eq!(clock.timers.get(), 0);
    }

    #[test]
    fn a_call_that_waits_is_bounded_by_one_timer() {
        let clock = CountingClock::default();
        let mut first = true;
        let waits_once = std::future::poll_fn(|cx| {
            if std::mem::take(&mut first) {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(7)
            }
        });
        assert_eq!(
            block_on(within(&clock, CONNECT_TIMEOUT, waits_once)),
            Some(7)
        );
        assert_eq!(clock.timers.get(), 1);
    }

    /// A clock that moves only when told.
    struct ManualClock(Cell<i64>);

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            DateTime::from_timestamp_millis(self.0.get()).unwrap()
        }
        async fn sleep(&self, _: Duration) {
            std::future::pending::<()>().await
        }
    }

    /// A store whose calls block the caller for `takes_ms` (moving the clock) and then fail.
    struct BlockingDownKv<'a> {
        clock: &'a ManualClock,
        takes_ms: i64,
        calls: Cell<u32>,
    }

    impl crate::host::Kv for BlockingDownKv<'_> {
        async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, HostError> {
            self.calls.set(self.calls.get() + 1);
            self.clock.0.set(self.clock.0.get() + self.takes_ms);
            Err("JetStream error: timed out".to_owned().into())
        }
        async fn set(&self, _: &str, _: &[u8]) -> Result<(), HostError> {
            self.get("").await.map(|_| ())
        }
        async fn delete(&self, _: &str) -> Result<(), HostError> {
            self.get("").await.map(|_| ())
        }
    }

    #[test]
    fn a_store_that_fails_only_after_the_timeout_is_skipped_like_one_that_timed_out() {
        use crate::host::Kv as _;
        let clock = ManualClock(Cell::new(1_000_000));
        let skip = AtomicI64::new(i64::MIN);
        // Failing at once: a refusal, not a stall; every operation is tried.
        let quick = BlockingDownKv {
            clock: &clock,
            takes_ms: 10,
            calls: Cell::new(0),
        };
        let kv = TimedKv {
            kv: &quick,
            clock: &clock,
            skip_until_ms: &skip,
        };
        for _ in 0..3 {
            assert!(block_on(kv.get("k")).is_err());
        }
        assert_eq!(quick.calls.get(), 3);
        // Failing after 5 s (a blocked instance the timer could not cut): the next operations
        // fail at once, without a call, until the back-off has passed.
        let slow = BlockingDownKv {
            clock: &clock,
            takes_ms: 5_000,
            calls: Cell::new(0),
        };
        let kv = TimedKv {
            kv: &slow,
            clock: &clock,
            skip_until_ms: &skip,
        };
        let first = block_on(kv.get("k")).unwrap_err();
        assert_eq!(first.failure, HostFailure::Timeout);
        let first = first.message;
        assert!(
            first.contains("timed out") && first.contains("skipping the store for 30 s"),
            "{first}"
        );
        assert!(
            block_on(kv.set("k", b"v"))
                .unwrap_err()
                .message
                .starts_with("skipped")
        );
        assert!(block_on(kv.delete("k")).is_err());
        assert_eq!(slow.calls.get(), 1);
        clock.0.set(clock.0.get() + KV_BACKOFF.as_millis() as i64);
        assert!(block_on(kv.get("k")).is_err());
        assert_eq!(slow.calls.get(), 2);
    }

    #[test]
    fn one_open_at_a_time_goes_untimed_and_only_while_the_database_answers() {
        let watch = OpenWatch::default();
        // Nothing succeeded yet: timed.
        assert!(watch.untimed(1_000).is_none());
        watch.succeeded(1_000);
        let slot = watch.untimed(2_000).expect("answered 1 s ago");
        // A second open meanwhile is timed; the slot is free again once the first ends.
        assert!(watch.untimed(2_000).is_none());
        drop(slot);
        assert!(watch.untimed(2_000).is_some());
        // After a quiet spell, or with a clock that went back, timed again.
        assert!(watch.untimed(1_000 + 5_000).is_none());
        assert!(watch.untimed(999).is_none());
        // An older success does not move the mark back.
        watch.succeeded(500);
        assert!(watch.untimed(5_999).is_some());
    }
}
