//! A database credential and the expiry policy that decides how long it is reused.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// A credential is reused for at most this long after it was minted (Lakebase tokens live one
/// hour; 45 minutes leaves a 15-minute buffer, the same as psycopg's `max_lifetime=2700`).
pub const MAX_REUSE: TimeDelta = TimeDelta::minutes(45);

/// A credential is never used closer than this to the server's own expiry (the official Node
/// driver's margin) — or than a quarter of its lifetime, when that is shorter (see
/// [`SHORT_LIFETIME_SHARE`]).
pub const SERVER_EXPIRY_MARGIN: TimeDelta = TimeDelta::minutes(2);

/// For a short-lived token the margin before the server's expiry is at most this share of its
/// lifetime (1/4), so that even a 20-second token is reused for 15 seconds instead of never.
pub const SHORT_LIFETIME_SHARE: i32 = 4;

/// When the server's expiry field is missing or unreadable, assume the documented hour.
pub const ASSUMED_LIFETIME: TimeDelta = TimeDelta::hours(1);

/// Until when a credential may be served:
/// `min(minted_at + 45 min, server_expiry − min(2 min, lifetime / 4))`, where the lifetime is
/// `server_expiry − minted_at`.
///
/// A token minted at 12:00 with server expiry 13:00 is reused until 12:45; one minted at 12:00
/// with server expiry 12:30 only until 12:28; one minted at 12:00:00 with server expiry 12:00:20
/// until 12:00:15. Out-of-range times never panic: they end the reuse at the earlier bound.
pub fn reuse_until(minted_at: DateTime<Utc>, server_expiry: DateTime<Utc>) -> DateTime<Utc> {
    let lifetime = server_expiry.signed_duration_since(minted_at);
    let margin = SERVER_EXPIRY_MARGIN
        .min(lifetime / SHORT_LIFETIME_SHARE)
        .max(TimeDelta::zero());
    let by_age = minted_at
        .checked_add_signed(MAX_REUSE)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let by_server = server_expiry
        .checked_sub_signed(margin)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    by_age.min(by_server)
}

/// Whether a credential that may be served until `until` may still be served at `now`.
/// At exactly `until` it is stale.
pub fn is_fresh(now: DateTime<Utc>, until: DateTime<Utc>) -> bool {
    now < until
}

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
    /// Until when this credential is served (see [`reuse_until`]).
    pub fn reuse_until(&self) -> DateTime<Utc> {
        reuse_until(self.minted_at, self.expires_at)
    }

    /// Whether it may still be served at `now`.
    pub fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        is_fresh(now, self.reuse_until())
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
    fn minted_at_noon_with_hour_expiry_is_reused_until_quarter_to_one() {
        assert_eq!(reuse_until(t("12:00:00"), t("13:00:00")), t("12:45:00"));
        assert!(is_fresh(t("12:44:59"), t("12:45:00")));
        assert!(
            !is_fresh(t("12:45:00"), t("12:45:00")),
            "stale at the boundary"
        );
        assert!(!is_fresh(t("12:45:01"), t("12:45:00")));
    }

    #[test]
    fn earlier_server_expiry_wins_with_margin() {
        assert_eq!(reuse_until(t("12:00:00"), t("12:30:00")), t("12:28:00"));
        // Exactly where both rules meet: expiry 12:47 - 2 min = 12:45.
        assert_eq!(reuse_until(t("12:00:00"), t("12:47:00")), t("12:45:00"));
    }

    #[test]
    fn a_token_past_its_server_expiry_is_never_fresh() {
        let until = reuse_until(t("12:00:00"), t("11:59:00"));
        assert!(!is_fresh(t("12:00:00"), until));
        let until = reuse_until(t("12:00:00"), t("12:00:00"));
        assert!(!is_fresh(t("12:00:00"), until), "zero lifetime");
    }

    #[test]
    fn short_lifetimes_keep_three_quarters_of_their_life() {
        // 20 s lifetime: margin 5 s, so reused for 15 s (not never, as with a fixed 2 min).
        assert_eq!(reuse_until(t("12:00:00"), t("12:00:20")), t("12:00:15"));
        assert!(is_fresh(t("12:00:14"), t("12:00:15")));
        // 1 min lifetime: margin 15 s.
        assert_eq!(reuse_until(t("12:00:00"), t("12:01:00")), t("12:00:45"));
        // 8 min lifetime: a quarter is exactly the 2-minute margin.
        assert_eq!(reuse_until(t("12:00:00"), t("12:08:00")), t("12:06:00"));
        // Longer ones keep the 2-minute margin: 10 min lifetime, reused 8 min.
        assert_eq!(reuse_until(t("12:00:00"), t("12:10:00")), t("12:08:00"));
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let (min, max) = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
        for (a, b) in [
            (min, max),
            (max, min),
            (max, max),
            (min, min),
            (t("12:00:00"), max),
        ] {
            let until = reuse_until(a, b);
            assert!(until <= b.max(a));
        }
        // Minted at the end of time: the 45 minutes cannot be added, the server expiry bounds it.
        assert_eq!(reuse_until(max, max), max);
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
