//! A database credential and the expiry policy that decides how long it is reused.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::expiry::{Expiring, idle_session_timeout, refresh_from, reuse_until, serve_until};
use crate::secret::Secret;
use crate::tier::Cached;

/// Where a credential came from on this call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialSource {
    /// This instance's memory.
    Memory,
    /// The shared key-value store (another instance minted it).
    Kv,
    /// Minted just now through the Databricks API.
    Minted,
}

impl CredentialSource {
    /// `"memory"`, `"kv"` or `"minted"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialSource::Memory => "memory",
            CredentialSource::Kv => "kv",
            CredentialSource::Minted => "minted",
        }
    }
}

/// Everything needed to log in to Lakebase Postgres.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The database token: the Postgres password.
    pub token: Secret,
    /// Postgres role.
    pub user: String,
    /// Postgres host.
    pub host: String,
    /// Postgres port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// When it was minted.
    pub minted_at: DateTime<Utc>,
    /// The server's expiry of the token.
    pub expires_at: DateTime<Utc>,
}

impl Credential {
    /// Until when this credential is served: at most 45 minutes after it was minted, and
    /// never closer to the server's expiry than 2 minutes (or a quarter of a short lifetime).
    /// A token minted at 12:00 with server expiry 13:00 is reused until 12:45.
    pub fn reuse_until(&self) -> DateTime<Utc> {
        reuse_until(self.minted_at, self.expires_at)
    }

    /// The time left at `now` before the server's expiry (zero once past it).
    pub fn expires_in(&self, now: DateTime<Utc>) -> std::time::Duration {
        (self.expires_at - now).to_std().unwrap_or_default()
    }

    /// Whether it may still be served at `now` (stale at exactly [`Credential::reuse_until`]).
    pub fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        Expiring::is_fresh(self, now)
    }

    /// Until when this credential is still served while its refresh keeps failing for a
    /// transient reason: 2 minutes (or a thirtieth of its lifetime) before the server's expiry.
    /// A token minted at 12:00 with server expiry 13:00 is served through an outage until 12:58.
    pub fn serve_until(&self) -> DateTime<Utc> {
        serve_until(self.minted_at, self.expires_at)
    }

    /// From when a host that may work after its response refreshes this credential in the
    /// background: the last tenth of its reuse window, at most its last 5 minutes (12:40:30 for a
    /// token reused from 12:00 to 12:45).
    pub fn refresh_from(&self) -> DateTime<Utc> {
        refresh_from(self.minted_at, self.reuse_until())
    }

    /// How long a database session logged in with this credential may stay idle before the
    /// server closes it (`idle_session_timeout`, sent in the connection string): a ninth of the
    /// reuse window, between 1 s and 5 minutes.
    pub fn idle_session_timeout(&self) -> std::time::Duration {
        idle_session_timeout(self.minted_at, self.reuse_until())
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(1))
    }
}

impl Expiring for Credential {
    fn usable_until(&self) -> DateTime<Utc> {
        self.reuse_until()
    }
}

impl Cached for Credential {
    type Record = CredentialRecord;
    const WHAT: &'static str = "credential";

    fn to_record(&self) -> CredentialRecord {
        CredentialRecord::from_credential(self)
    }

    fn from_record(record: CredentialRecord) -> Option<Self> {
        record.into_credential()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("token", &self.token)
            .field("user", &self.user)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("minted_at", &self.minted_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The key-value form of a credential. Versioned: a record of another version is a cache miss.
#[derive(Serialize, Deserialize)]
pub(crate) struct CredentialRecord {
    pub v: u32,
    pub token: String,
    pub user: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    /// Unix seconds.
    pub minted_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

use crate::cache::RECORD_VERSION;

impl CredentialRecord {
    pub fn from_credential(c: &Credential) -> Self {
        CredentialRecord {
            v: RECORD_VERSION,
            token: c.token.expose().to_owned(),
            user: c.user.clone(),
            host: c.host.clone(),
            port: c.port,
            database: c.database.clone(),
            minted_at: c.minted_at.timestamp(),
            expires_at: c.expires_at.timestamp(),
        }
    }

    /// `None` for a record of another version or with impossible times.
    pub fn into_credential(self) -> Option<Credential> {
        if self.v != RECORD_VERSION || self.token.is_empty() {
            return None;
        }
        Some(Credential {
            token: Secret::new(self.token),
            user: self.user,
            host: self.host,
            port: self.port,
            database: self.database,
            minted_at: DateTime::from_timestamp(self.minted_at, 0)?,
            expires_at: DateTime::from_timestamp(self.expires_at, 0)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(hms: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-02-06T{hms}Z"))
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn record_round_trip_and_version_check() {
        let c = Credential {
            token: Secret::new("tok"),
            user: "u".into(),
            host: "h".into(),
            port: 5432,
            database: "d".into(),
            minted_at: t("12:00:00"),
            expires_at: t("13:00:00"),
        };
        let r = CredentialRecord::from_credential(&c);
        assert_eq!(r.into_credential().unwrap(), c);
        let mut old = CredentialRecord::from_credential(&c);
        old.v = 0;
        assert!(old.into_credential().is_none());
    }
}
