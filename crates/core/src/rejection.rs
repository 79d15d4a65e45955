//! A remembered rejection: when the database rejects a token minted just now, the role (not the
//! token) is wrong, and minting again will not help. For a short time every request gets the same
//! `database` error at once, without a mint: [`FIRST_HOLD`], doubling with each new rejection up to
//! [`LAST_HOLD`].
//!
//! It is kept in instance memory and in the key-value store (sealed like every record), with the
//! fingerprint of the rejected token: another instance that logs in with that same token and is
//! rejected finds the record and answers at once instead of minting. Nothing is read in the happy
//! path: the record is looked at only after a `28P01`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::cache::RECORD_VERSION;
use crate::credential::Credential;
use crate::error::Error;
use crate::expiry::Expiring;
use crate::login::rejected_twice;
use crate::tier::Cached;

/// How long the first rejection is remembered.
pub(crate) const FIRST_HOLD: Duration = Duration::from_secs(30);
/// The longest a rejection is remembered.
pub(crate) const LAST_HOLD: Duration = Duration::from_secs(300);

/// "The database rejected this freshly minted token; do not mint again before `until`."
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// Fingerprint of the rejected token (never the token).
    pub token: String,
    /// The role it was rejected for.
    pub user: String,
    /// The server's message (scrubbed and capped).
    pub message: String,
    pub until: DateTime<Utc>,
    pub hold: Duration,
}

impl Rejection {
    /// The rejection of `fresh` at `now`, held twice as long as `previous` when that one ended
    /// less than its own hold ago (a rejection that keeps coming back), else [`FIRST_HOLD`].
    pub fn new(
        fresh: &Credential,
        message: String,
        now: DateTime<Utc>,
        previous: Option<&Rejection>,
    ) -> Rejection {
        let recent = |p: &&Rejection| {
            TimeDelta::from_std(p.hold)
                .ok()
                .and_then(|h| p.until.checked_add_signed(h))
                .is_some_and(|end| now < end)
        };
        let hold = previous
            .filter(recent)
            .map_or(FIRST_HOLD, |p| p.hold.saturating_mul(2))
            .min(LAST_HOLD);
        let until = TimeDelta::from_std(hold)
            .ok()
            .and_then(|h| now.checked_add_signed(h))
            .unwrap_or(now);
        Rejection {
            token: fresh.token.fingerprint(),
            user: fresh.user.clone(),
            message,
            until,
            hold,
        }
    }

    /// The error every request gets while it holds: the one the rejection itself gave.
    pub fn error(&self) -> Error {
        rejected_twice(self.message.clone(), &self.user)
    }
}

impl Expiring for Rejection {
    fn usable_until(&self) -> DateTime<Utc> {
        self.until
    }
}

/// The key-value form of a rejection (also carried in the mint lease, `cache.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RejectionRecord {
    v: u32,
    token: String,
    user: String,
    message: String,
    /// Unix seconds.
    until: i64,
    hold_secs: u64,
}

impl Cached for Rejection {
    type Record = RejectionRecord;
    const WHAT: &'static str = "rejection";

    fn to_record(&self) -> RejectionRecord {
        RejectionRecord {
            v: RECORD_VERSION,
            token: self.token.clone(),
            user: self.user.clone(),
            message: self.message.clone(),
            until: self.until.timestamp(),
            hold_secs: self.hold.as_secs(),
        }
    }

    fn from_record(r: RejectionRecord) -> Option<Self> {
        (r.v == RECORD_VERSION).then_some(())?;
        Some(Rejection {
            token: r.token,
            user: r.user,
            message: r.message,
            until: DateTime::from_timestamp(r.until, 0)?,
            hold: Duration::from_secs(r.hold_secs).min(LAST_HOLD),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_770_000_000 + secs, 0).unwrap()
    }

    fn fresh() -> Credential {
        Credential {
            token: Secret::new("tok-rejected"),
            user: "nobody".into(),
            host: "h".into(),
            port: 5432,
            database: "d".into(),
            minted_at: t(0),
            expires_at: t(3600),
        }
    }

    #[test]
    fn holds_double_while_rejections_keep_coming_back() {
        let mut previous: Option<Rejection> = None;
        let mut now = t(0);
        let mut holds = vec![];
        for _ in 0..6 {
            let r = Rejection::new(&fresh(), "28P01".into(), now, previous.as_ref());
            holds.push(r.hold.as_secs());
            assert_eq!(r.until, now + TimeDelta::from_std(r.hold).unwrap());
            now = r.until + TimeDelta::seconds(1);
            previous = Some(r);
        }
        assert_eq!(holds, vec![30, 60, 120, 240, 300, 300]);
        // A rejection long after the last one starts afresh.
        let later = Rejection::new(&fresh(), "28P01".into(), t(100_000), previous.as_ref());
        assert_eq!(later.hold, FIRST_HOLD);
    }

    #[test]
    fn record_round_trip_keeps_no_token() {
        let r = Rejection::new(
            &fresh(),
            "password authentication failed".into(),
            t(0),
            None,
        );
        let record = serde_json::to_string(&r.to_record()).unwrap();
        assert!(!record.contains("tok-rejected"), "{record}");
        let back = Rejection::from_record(serde_json::from_str(&record).unwrap()).unwrap();
        assert_eq!(back, r);
        let e = back.error();
        assert_eq!(e.sqlstate(), Some("28P01"));
        assert!(e.message().contains("`nobody`"), "{e}");
    }
}
