//! The host's parts one client works with, bundled: HTTP, the key-value store (every operation
//! under a deadline), the clock, the retry policy and the sealed-record format of this
//! configuration. The workspace client and the credential flow both borrow it.

use std::sync::atomic::AtomicI64;

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
        }
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
