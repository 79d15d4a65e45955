//! One value cached in two tiers: this instance's memory, then the shared key-value store.
//!
//! Both tokens go through it: the database credential and the OAuth workspace token. A value is
//! served while it is fresh by its own expiry rule ([`Expiring`], all in `expiry.rs`); the record
//! in the store is sealed (`cache.rs`). What happens on a miss (a mint, a token request) is the
//! caller's: the tiers only remember, serve and forget.

use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::Cache;
use crate::expiry::Expiring;
use crate::host::Kv;
use crate::log;

/// A value that has a key-value record.
pub(crate) trait Cached: Expiring + Clone {
    /// Its versioned record.
    type Record: Serialize + DeserializeOwned;
    /// What it is, for logs.
    const WHAT: &'static str;
    /// The record to store.
    fn to_record(&self) -> Self::Record;
    /// The value of a record read back; `None` for a record of another version or with
    /// impossible values.
    fn from_record(record: Self::Record) -> Option<Self>;
}

/// One cached value of type `T`: in memory, and under `key` in the store.
#[derive(Debug)]
pub(crate) struct Tier<T> {
    key: String,
    memory: Mutex<Option<T>>,
}

impl<T: Cached> Tier<T> {
    pub fn new(key: String) -> Self {
        Tier {
            key,
            memory: Mutex::new(None),
        }
    }

    fn memory(&self) -> MutexGuard<'_, Option<T>> {
        // Never held across an await; a poisoned lock (a panic elsewhere) still holds plain data.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value in memory, if it may be served at `now`.
    pub fn fresh_in_memory(&self, now: DateTime<Utc>) -> Option<T> {
        self.memory().as_ref().filter(|v| v.is_fresh(now)).cloned()
    }

    /// Whether the value in memory, fresh or not, passes `test` (without copying it).
    pub fn in_memory_is(&self, test: impl FnOnce(&T) -> bool) -> bool {
        self.memory().as_ref().is_some_and(test)
    }

    /// The value in memory, fresh or not (to scrub it from error text).
    pub fn in_memory(&self) -> Option<T> {
        self.memory().clone()
    }

    /// Puts `value` in memory only (it came from the store).
    pub fn remember(&self, value: T) {
        *self.memory() = Some(value);
    }

    /// The record in the store, whatever its freshness; `None` when absent, unreadable or the
    /// store fails (logged).
    pub async fn stored(&self, cache: &Cache, kv: &impl Kv) -> Option<T> {
        T::from_record(cache.read(kv, &self.key, T::WHAT).await?)
    }

    /// The record in the store if `fits` accepts it (else logged once per instance) and it may
    /// be served at `now`; then it is remembered too.
    pub async fn fresh_from_store(
        &self,
        cache: &Cache,
        kv: &impl Kv,
        now: DateTime<Utc>,
        fits: impl Fn(&T) -> Result<(), &'static str>,
    ) -> Option<T> {
        let value = self.stored(cache, kv).await?;
        if let Err(why) = fits(&value) {
            cache.warn_once(&format!("ignoring a cached {}: {why}", T::WHAT));
            return None;
        }
        if !value.is_fresh(now) {
            return None;
        }
        self.remember(value.clone());
        Some(value)
    }

    /// Stores a new `value` in the store, then in memory, if it may be served at `now`;
    /// otherwise (clock skew?) keeps it nowhere.
    pub async fn keep(&self, cache: &Cache, kv: &impl Kv, value: &T, now: DateTime<Utc>) {
        if !value.is_fresh(now) {
            log::warn(&format!(
                "the new {} is already past its reuse limit (clock skew?); not caching it",
                T::WHAT
            ));
            return;
        }
        cache
            .write(kv, &self.key, &value.to_record(), T::WHAT)
            .await;
        self.remember(value.clone());
    }

    /// Forgets the value in memory and in the store where `matches` says it is the one to drop
    /// (not a newer one that replaced it). Returns whether anything was dropped.
    pub async fn forget(&self, cache: &Cache, kv: &impl Kv, matches: impl Fn(&T) -> bool) -> bool {
        let mut dropped = false;
        {
            let mut memory = self.memory();
            if memory.as_ref().is_some_and(&matches) {
                *memory = None;
                dropped = true;
            }
        }
        if self.stored(cache, kv).await.is_some_and(|v| matches(&v)) {
            cache.delete(kv, &self.key, T::WHAT).await;
            dropped = true;
        }
        dropped
    }

    /// Forgets the value in memory and deletes its record, unread.
    pub async fn forget_all(&self, cache: &Cache, kv: &impl Kv) {
        *self.memory() = None;
        cache.delete(kv, &self.key, T::WHAT).await;
    }
}
