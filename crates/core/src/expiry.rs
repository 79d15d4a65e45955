//! The expiry policy, in one place: how long a database credential and an OAuth workspace token
//! are served from a cache, as named constants and pure functions over times.

use chrono::{DateTime, TimeDelta, Utc};

/// A credential is reused for at most this long after it was minted (Lakebase tokens live one
/// hour; 45 minutes leaves a 15-minute buffer, the same as psycopg's `max_lifetime=2700`).
pub(crate) const MAX_REUSE: TimeDelta = TimeDelta::minutes(45);

/// A credential is never used closer than this to the server's own expiry (the official Node
/// driver's margin) — or than a quarter of its lifetime, when that is shorter (see
/// [`SHORT_LIFETIME_SHARE`]).
pub(crate) const SERVER_EXPIRY_MARGIN: TimeDelta = TimeDelta::minutes(2);

/// For a short-lived token the margin before the server's expiry is at most this share of its
/// lifetime (1/4), so that even a 20-second token is reused for 15 seconds instead of never.
pub(crate) const SHORT_LIFETIME_SHARE: i32 = 4;

/// When the server's expiry field is missing or unreadable, assume the documented hour.
pub(crate) const ASSUMED_LIFETIME: TimeDelta = TimeDelta::hours(1);

/// Until when a credential may be served:
/// `min(minted_at + 45 min, server_expiry − min(2 min, lifetime / 4))`, where the lifetime is
/// `server_expiry − minted_at`.
///
/// A token minted at 12:00 with server expiry 13:00 is reused until 12:45; one minted at 12:00
/// with server expiry 12:30 only until 12:28; one minted at 12:00:00 with server expiry 12:00:20
/// until 12:00:15. Out-of-range times never panic: they end the reuse at the earlier bound.
pub(crate) fn reuse_until(minted_at: DateTime<Utc>, server_expiry: DateTime<Utc>) -> DateTime<Utc> {
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

/// A credential past its reuse limit is still served while a refresh fails for a transient
/// reason (the workspace is down, rate-limiting, slow), but never closer to the server's expiry
/// than this — or than a thirtieth of its lifetime, when that is shorter (see
/// [`OUTAGE_LIFETIME_SHARE`]).
pub(crate) const OUTAGE_MARGIN: TimeDelta = TimeDelta::minutes(2);

/// For a short-lived token the outage margin is at most this share of its lifetime (1/30): a
/// 60-second token is served until 58 s, as an hour's token is until 58 minutes.
pub(crate) const OUTAGE_LIFETIME_SHARE: i32 = 30;

/// Until when a credential may be served at all, while its refresh is failing:
/// `server_expiry − min(2 min, lifetime / 30)`. Never earlier than [`reuse_until`].
///
/// A token minted at 12:00 with server expiry 13:00 is reused until 12:45 and served through a
/// workspace outage until 12:58; one of 60 s is reused for 45 s and served until 58 s.
pub(crate) fn serve_until(minted_at: DateTime<Utc>, server_expiry: DateTime<Utc>) -> DateTime<Utc> {
    let lifetime = server_expiry.signed_duration_since(minted_at);
    let margin = OUTAGE_MARGIN
        .min(lifetime / OUTAGE_LIFETIME_SHARE)
        .max(TimeDelta::zero());
    server_expiry
        .checked_sub_signed(margin)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
        .max(reuse_until(minted_at, server_expiry))
}

/// A refresh ahead starts at most this long before the reuse limit…
pub(crate) const REFRESH_AHEAD: TimeDelta = TimeDelta::minutes(5);

/// …and at most this share of the reuse window (1/10) before it.
pub(crate) const REFRESH_AHEAD_SHARE: i32 = 10;

/// From when a credential reused until `until` is refreshed ahead, where the host lets work go
/// on after the response: `until − min(5 min, (until − minted_at) / 10)`.
///
/// A token minted at 12:00 and reused until 12:45 is refreshed from 12:40:30; one reused for
/// 45 s from 40.5 s.
pub(crate) fn refresh_from(minted_at: DateTime<Utc>, until: DateTime<Utc>) -> DateTime<Utc> {
    let window = until
        .signed_duration_since(minted_at)
        .max(TimeDelta::zero());
    until
        .checked_sub_signed(REFRESH_AHEAD.min(window / REFRESH_AHEAD_SHARE))
        .unwrap_or(until)
}

/// The longest idle time of a database session (PostgreSQL's `idle_session_timeout`, set at
/// login): the server closes sessions that pooling hosts keep but no longer use, such as those of
/// a replaced token (Spin keeps one pool per connection string, without an idle timeout).
pub(crate) const MAX_IDLE_SESSION: TimeDelta = TimeDelta::minutes(5);

/// The shortest idle time of a database session set by [`idle_session_timeout`].
pub(crate) const MIN_IDLE_SESSION: TimeDelta = TimeDelta::seconds(1);

/// The `idle_session_timeout` of sessions logged in with a credential reused from `minted_at`
/// until `until`: a ninth of the reuse window, between 1 s and 5 minutes. A 45-minute window
/// gives 5 minutes: an old token's idle sessions close within 5 minutes of the rotation; a
/// 45-second window gives 5 s.
pub(crate) fn idle_session_timeout(minted_at: DateTime<Utc>, until: DateTime<Utc>) -> TimeDelta {
    (until.signed_duration_since(minted_at) / 9).clamp(MIN_IDLE_SESSION, MAX_IDLE_SESSION)
}

/// Whether a credential that may be served until `until` may still be served at `now`.
/// At exactly `until` it is stale.
pub(crate) fn is_fresh(now: DateTime<Utc>, until: DateTime<Utc>) -> bool {
    now < until
}

/// An OAuth workspace token is dropped this long before its `expires_in` (at least 40 s are
/// needed: Databricks answers "Token is expiring within 30 seconds" before that).
pub(crate) const WORKSPACE_TOKEN_MARGIN: TimeDelta = TimeDelta::seconds(60);

/// A longer `expires_in` is taken as this (a day).
const MAX_WORKSPACE_TOKEN_LIFETIME: i64 = 86_400;

/// Lifetime assumed when the token endpoint gives no `expires_in`.
const DEFAULT_WORKSPACE_TOKEN_LIFETIME: i64 = 3600;

/// Until when an OAuth workspace token obtained at `now` with `expires_in` seconds (if given) is
/// used: its lifetime (an hour when not given, at most a day, never negative) less
/// [`WORKSPACE_TOKEN_MARGIN`]. A token of 3600 s obtained at 12:00 is used until 12:59.
pub(crate) fn workspace_token_until(now: DateTime<Utc>, expires_in: Option<i64>) -> DateTime<Utc> {
    let lifetime = expires_in.unwrap_or(DEFAULT_WORKSPACE_TOKEN_LIFETIME);
    // Bounded: a hostile or broken `expires_in` neither overflows nor caches for ever.
    let usable =
        lifetime.clamp(0, MAX_WORKSPACE_TOKEN_LIFETIME) - WORKSPACE_TOKEN_MARGIN.num_seconds();
    now.checked_add_signed(TimeDelta::seconds(usable.max(0)))
        .unwrap_or(now)
}

/// Something served from a cache until a time.
pub(crate) trait Expiring {
    /// Until when it is served.
    fn usable_until(&self) -> DateTime<Utc>;

    /// Whether it may be served at `now` (see [`is_fresh`]).
    fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        is_fresh(now, self.usable_until())
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
    fn workspace_tokens_are_used_until_a_minute_before_they_expire() {
        assert_eq!(
            workspace_token_until(t("12:00:00"), Some(3600)),
            t("12:59:00")
        );
        assert_eq!(
            workspace_token_until(t("12:00:00"), None),
            t("12:59:00"),
            "an hour assumed"
        );
        assert_eq!(
            workspace_token_until(t("12:00:00"), Some(30)),
            t("12:00:00"),
            "never negative"
        );
        assert_eq!(
            workspace_token_until(t("12:00:00"), Some(i64::MAX)),
            t("12:00:00") + TimeDelta::seconds(86_400 - 60),
            "at most a day"
        );
        assert_eq!(
            workspace_token_until(DateTime::<Utc>::MAX_UTC, Some(3600)),
            DateTime::<Utc>::MAX_UTC
        );
    }
    #[test]
    fn served_through_an_outage_until_shortly_before_the_server_expiry() {
        assert_eq!(serve_until(t("12:00:00"), t("13:00:00")), t("12:58:00"));
        assert_eq!(serve_until(t("12:00:00"), t("12:01:00")), t("12:00:58"));
        // 30 min: margin a thirtieth (1 min), later than the reuse limit (12:28).
        assert_eq!(serve_until(t("12:00:00"), t("12:30:00")), t("12:29:00"));
        // Never before the reuse limit, never past the server's expiry.
        for (a, b) in [
            (t("12:00:00"), t("12:00:20")),
            (t("12:00:00"), t("11:00:00")),
            (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC),
            (DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC),
        ] {
            let s = serve_until(a, b);
            assert!(s >= reuse_until(a, b));
            assert!(s <= b.max(reuse_until(a, b)));
        }
    }

    #[test]
    fn refreshed_ahead_in_the_last_tenth_or_five_minutes() {
        assert_eq!(refresh_from(t("12:00:00"), t("12:45:00")), t("12:40:30"));
        assert_eq!(
            refresh_from(t("12:00:00"), t("12:00:45")),
            t("12:00:40") + TimeDelta::milliseconds(500)
        );
        // A two-hour window: at most five minutes ahead.
        assert_eq!(refresh_from(t("12:00:00"), t("14:00:00")), t("13:55:00"));
        assert_eq!(refresh_from(t("12:00:00"), t("11:00:00")), t("11:00:00"));
    }

    #[test]
    fn idle_sessions_end_a_ninth_of_the_window_after_their_last_use() {
        let idle = |from, to| idle_session_timeout(t(from), t(to));
        assert_eq!(idle("12:00:00", "12:45:00"), TimeDelta::minutes(5));
        assert_eq!(idle("12:00:00", "12:00:45"), TimeDelta::seconds(5));
        assert_eq!(idle("12:00:00", "12:00:01"), TimeDelta::seconds(1));
        assert_eq!(idle("12:00:00", "11:00:00"), TimeDelta::seconds(1));
        assert_eq!(idle("12:00:00", "23:00:00"), TimeDelta::minutes(5));
    }
}
