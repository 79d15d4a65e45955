//! The host's parts one client works with, bundled: HTTP, the key-value store (every operation
//! under a deadline), the clock, the retry policy and the sealed-record format of this
//! configuration. The workspace client and the credential flow both borrow it.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::cache::Cache;
use crate::deadline::TimedKv;
use crate::retry::RetryPolicy;

/// HTTP, key-value and clock of one client, with what it shares about them.
#[derive(Debug)]
pub(crate) struct Seams<H, K, C> {
    pub http: H,
    kv: K,
    pub clock: C,
    pub retry: RetryPolicy,
    /// The sealed records of this configuration.
    pub cache: Cache,
    /// Until when (Unix ms) the key-value store is skipped after it timed out.
    kv_skip_until_ms: AtomicI64,
    /// Set while a request that has a credential to serve tries the workspace once
    /// ([`Seams::one_attempt`]).
    one_attempt: AtomicBool,
}

impl<H, K, C> Seams<H, K, C> {
    pub fn new(http: H, kv: K, clock: C, cache: Cache) -> Self {
        Seams {
            http,
            kv,
            clock,
            retry: RetryPolicy::default(),
            cache,
            kv_skip_until_ms: AtomicI64::new(i64::MIN),
            one_attempt: AtomicBool::new(false),
        }
    }

    /// The retry policy of the workspace calls made now: [`Seams::retry`], or a single attempt
    /// while a [`OneAttempt`] guard lives.
    pub fn workspace_retry(&self) -> std::borrow::Cow<'_, RetryPolicy> {
        if self.one_attempt.load(Ordering::Relaxed) {
            std::borrow::Cow::Owned(self.retry.clone().max_attempts(1))
        } else {
            std::borrow::Cow::Borrowed(&self.retry)
        }
    }

    /// Until the guard is dropped, every workspace call is tried once, not retried: a request
    /// that serves a credential through an outage costs the workspace one call per back-off
    /// period, not the retry policy's four. Taken by the one load of the instance that holds
    /// the flight ticket, so no other workspace call of the instance runs meanwhile.
    pub fn one_attempt(&self) -> OneAttempt<'_> {
        self.one_attempt.store(true, Ordering::Relaxed);
        OneAttempt(&self.one_attempt)
    }

    /// The store, every operation bounded by a deadline.
    pub fn kv(&self) -> TimedKv<'_, K, C> {
        TimedKv {
            kv: &self.kv,
            clock: &self.clock,
            skip_until_ms: &self.kv_skip_until_ms,
        }
    }
}

/// See [`Seams::one_attempt`]; dropping it (also when the attempt is cut) ends the single try.
pub(crate) struct OneAttempt<'a>(&'a AtomicBool);

impl Drop for OneAttempt<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}
