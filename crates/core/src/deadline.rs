//! Deadlines on host calls, measured by the host's own timers.
//!
//! Every outbound call is raced against [`Clock::sleep`]: a workspace that accepts a connection
//! and never answers, or a database that stalls at login, costs a bounded time, and the dropped
//! call is cancelled by the host. Waiting on a host timer is also what Spin's executor allows.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::future::{Either, select};

use crate::host::Clock;

/// One HTTP exchange with the workspace: connect, headers and the whole body.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// One Postgres connect (TCP, TLS and login).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole credential load in one request: key-value, waiting for another instance's lease,
/// workspace token, look-ups, the mint and all their retries.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(25);
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
/// store is skipped (fails at once) for [`KV_BACKOFF`].
pub(crate) struct TimedKv<'a, K, C> {
    pub kv: &'a K,
    pub clock: &'a C,
    /// Unix milliseconds until which the store is skipped (shared by the instance).
    pub skip_until_ms: &'a std::sync::atomic::AtomicI64,
}

impl<K, C: Clock> TimedKv<'_, K, C> {
    async fn run<T>(&self, op: impl Future<Output = Result<T, String>>) -> Result<T, String> {
        use std::sync::atomic::Ordering;
        let now = self.clock.now().timestamp_millis();
        if now < self.skip_until_ms.load(Ordering::Relaxed) {
            return Err("skipped: it did not answer in time recently".to_owned());
        }
        match within(self.clock, KV_TIMEOUT, op).await {
            Some(result) => result,
            None => {
                let until = now.saturating_add(KV_BACKOFF.as_millis() as i64);
                self.skip_until_ms.store(until, Ordering::Relaxed);
                Err(format!(
                    "no answer within {} s; skipping the store for {} s",
                    KV_TIMEOUT.as_secs(),
                    KV_BACKOFF.as_secs()
                ))
            }
        }
    }
}

impl<K: crate::host::Kv, C: Clock> crate::host::Kv for TimedKv<'_, K, C> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.run(self.kv.get(key)).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.run(self.kv.set(key, value)).await
    }

    async fn delete(&self, key: &str) -> Result<(), String> {
        self.run(self.kv.delete(key)).await
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
}
