//! Postgres connection strings, built from parts with every component percent-encoded.

use std::sync::Mutex;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::config::SslMode;
use crate::credential::Credential;
use crate::secret::Secret;

/// Everything but `A-Z a-z 0-9 - . _ ~` is encoded (RFC 3986 unreserved characters stay).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// `postgres://user:password@host:port/database?sslmode=…` in URL form, the form Spin's
/// `spin:postgres` parses (and libpq, psycopg, pgx). With `idle_session_timeout`, the server is
/// asked at login to close the session after that long idle
/// (`options=-c idle_session_timeout=<ms>`; a setting given at startup survives `RESET ALL`).
/// The result holds the password, so it is a [`Secret`].
pub(crate) fn connection_string(
    user: &str,
    password: &Secret,
    host: &str,
    port: u16,
    database: &str,
    sslmode: SslMode,
    idle_session_timeout: Option<Duration>,
) -> Secret {
    // An IPv6 literal needs brackets in a URL.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let mut s = format!(
        "postgres://{}:{}@{}:{}/{}?sslmode={}",
        enc(user),
        enc(password.expose()),
        host,
        port,
        enc(database),
        sslmode.as_str()
    );
    if let Some(idle) = idle_session_timeout {
        // PostgreSQL takes at most 2^31 - 1 ms; 0 would mean "never".
        let ms = idle.as_millis().clamp(1, i32::MAX as u128);
        s.push_str(&format!(
            "&options={}",
            enc(&format!("-c idle_session_timeout={ms}"))
        ));
    }
    Secret::new(s)
}

/// How many credentials' connection strings are kept: the one in use, and a few more for an app
/// that opens several databases with it (or a credential that was just replaced).
const MEMO_SIZE: usize = 4;

/// The connection strings of the last few credentials (each with its database), so that a warm
/// connect copies one instead of building it and percent-encoding the token again.
#[derive(Debug, Default)]
pub(crate) struct AddressMemo(Mutex<Vec<(Credential, Secret)>>);

impl AddressMemo {
    /// The string of `c`: the one kept for an equal credential, else `build()`, then kept (the
    /// oldest of [`MEMO_SIZE`] goes).
    pub fn get_or_build(&self, c: &Credential, build: impl FnOnce() -> Secret) -> Secret {
        // Never held across an await; a poisoned lock (a panic elsewhere) still holds plain data.
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, address)) = kept.iter().find(|(k, _)| k == c) {
            return address.clone();
        }
        let address = build();
        if kept.len() >= MEMO_SIZE {
            kept.remove(0);
        }
        kept.push((c.clone(), address.clone()));
        address
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::percent_decode_str;

    fn parts(s: &str) -> (String, String, String) {
        let rest = s.strip_prefix("postgres://").unwrap();
        let (userinfo, rest) = rest.rsplit_once('@').unwrap();
        let (user, pass) = userinfo.split_once(':').unwrap();
        let db = rest.split_once('/').unwrap().1.split_once('?').unwrap().0;
        let dec = |x: &str| percent_decode_str(x).decode_utf8().unwrap().into_owned();
        (dec(user), dec(pass), dec(db))
    }

    #[test]
    fn awkward_values_round_trip() {
        let cases = [
            (
                "6f1c2a3e-0000-4000-8000-000000000001",
                "eyJhbGciOi.payload.sig-_",
            ),
            ("someone@example.com", "p@ss:word/with?query#frag"),
            ("user with space", "quote'double\"back\\slash"),
            ("percent%user", "100%real%41"),
            ("", ""),
            ("ünïcode", "pässwörd"),
        ];
        for (user, pass) in cases {
            let s = connection_string(
                user,
                &Secret::new(pass),
                "h",
                5432,
                "my db/x",
                SslMode::Require,
                None,
            );
            let (u, p, d) = parts(s.expose());
            assert_eq!(
                (u.as_str(), p.as_str(), d.as_str()),
                (user, pass, "my db/x")
            );
            // Only the structural characters are literal.
            let text = s.expose();
            assert_eq!(text.matches('@').count(), 1, "{text}");
            assert_eq!(text.matches('?').count(), 1, "{text}");
        }
    }

    #[test]
    fn shape_and_sslmode() {
        let s = connection_string(
            "u",
            &Secret::new("t"),
            "ep-1.database.us-east-1.cloud.databricks.com",
            5432,
            "databricks_postgres",
            SslMode::Require,
            None,
        );
        assert_eq!(
            s.expose(),
            "postgres://u:t@ep-1.database.us-east-1.cloud.databricks.com:5432/databricks_postgres?sslmode=require"
        );
        let s = connection_string(
            "u",
            &Secret::new("t"),
            "::1",
            6543,
            "d",
            SslMode::Disable,
            None,
        );
        assert_eq!(s.expose(), "postgres://u:t@[::1]:6543/d?sslmode=disable");
    }

    #[test]
    fn the_string_is_a_secret() {
        let s = connection_string(
            "u",
            &Secret::new("tok-123"),
            "h",
            1,
            "d",
            SslMode::Prefer,
            None,
        );
        assert!(!format!("{s:?}").contains("tok-123"));
        assert_eq!(s.expose(), "postgres://u:tok-123@h:1/d?sslmode=prefer");
    }

    #[test]
    fn idle_session_timeout_goes_in_the_startup_options() {
        let s = connection_string(
            "u",
            &Secret::new("t"),
            "h",
            5432,
            "d",
            SslMode::Require,
            Some(Duration::from_secs(300)),
        );
        assert_eq!(
            s.expose(),
            "postgres://u:t@h:5432/d?sslmode=require&options=-c%20idle_session_timeout%3D300000"
        );
        // tokio-postgres (Spin's parser) reads it back as the server setting.
        let options = url_query(s.expose(), "options");
        assert_eq!(options, "-c idle_session_timeout=300000");
        let huge = connection_string(
            "u",
            &Secret::new("t"),
            "h",
            1,
            "d",
            SslMode::Require,
            Some(Duration::from_secs(u64::MAX)),
        );
        assert!(
            huge.expose().ends_with("%3D2147483647"),
            "{}",
            huge.expose()
        );
    }

    #[test]
    fn the_memo_builds_a_credentials_string_once() {
        let t = |s| chrono::DateTime::from_timestamp(s, 0).unwrap();
        let cred = |token: &str, database: &str| Credential {
            token: Secret::new(token),
            user: "u".into(),
            host: "h".into(),
            port: 5432,
            database: database.into(),
            minted_at: t(0),
            expires_at: t(3600),
        };
        let memo = AddressMemo::default();
        let builds = std::cell::Cell::new(0);
        let get = |c: &Credential| {
            memo.get_or_build(c, || {
                builds.set(builds.get() + 1);
                connection_string(
                    &c.user,
                    &c.token,
                    &c.host,
                    c.port,
                    &c.database,
                    SslMode::Require,
                    None,
                )
            })
        };
        let a = cred("token-a", "d");
        assert_eq!(get(&a), get(&a));
        assert_eq!(builds.get(), 1);
        // Another database or token is another string.
        assert!(
            get(&cred("token-a", "other"))
                .expose()
                .ends_with("/other?sslmode=require")
        );
        assert!(get(&cred("token-b", "d")).expose().contains(":token-b@"));
        assert_eq!(builds.get(), 3);
        // At most MEMO_SIZE are kept; the oldest goes first.
        for i in 0..MEMO_SIZE {
            get(&cred(&format!("token-{i}"), "d"));
        }
        let before = builds.get();
        get(&a);
        assert_eq!(builds.get(), before + 1, "token-a was dropped");
        assert_eq!(memo.0.lock().unwrap().len(), MEMO_SIZE);
    }

    fn url_query(s: &str, key: &str) -> String {
        let query = s.split_once('?').unwrap().1;
        let value = query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap();
        percent_decode_str(value)
            .decode_utf8()
            .unwrap()
            .into_owned()
    }
}
