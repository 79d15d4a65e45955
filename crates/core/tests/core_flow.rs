//! The credential flow of the core, natively, over fakes: a manual clock, an in-memory
//! key-value store, a scripted workspace that checks every request, and a token-checking login.

mod fakes;

use std::time::Duration;

use chrono::TimeDelta;
use fakes::*;
use futures::executor::block_on;
use lakebase::{Config, CredentialSource, ErrorKind, Lakebase, Obtained, RetryPolicy, Secret};

const START: &str = "2026-02-06T12:00:00Z";

type Client = Lakebase<FakeWorkspace, MemKv, ManualClock>;

struct World {
    clock: ManualClock,
    kv: MemKv,
    ws: FakeWorkspace,
    pg: FakePg,
    vars: MapVars,
}

impl World {
    fn m2m() -> World {
        Self::with_vars(&[
            ("databricks_host", HOST),
            ("databricks_client_id", CLIENT_ID),
            ("databricks_client_secret", CLIENT_SECRET),
            ("lakebase_endpoint", ENDPOINT),
        ])
    }

    fn with_vars(vars: &[(&str, &str)]) -> World {
        let clock = ManualClock::at(START);
        let ws = FakeWorkspace::new(&clock);
        World {
            pg: FakePg::new(&ws),
            kv: MemKv::default(),
            ws,
            clock,
            vars: MapVars::new(vars),
        }
    }

    /// A new WebAssembly instance: empty memory, same store, same workspace.
    fn instance(&self) -> Client {
        let config = block_on(Config::load(&self.vars)).expect("valid config");
        // No jitter: the tests compare the waits exactly.
        Lakebase::new(config, self.ws.clone(), self.kv.clone(), self.clock.clone())
            .with_retry_policy(RetryPolicy::default().max_jitter(Duration::ZERO))
    }
}

fn source(c: &Client) -> CredentialSource {
    block_on(c.credential()).unwrap().source
}

#[test]
fn cold_mint_then_reuse_from_memory_and_kv() {
    let w = World::m2m();
    let a = w.instance();
    let Obtained {
        credential: cred,
        source: src,
    } = block_on(a.credential()).unwrap();
    assert_eq!(src, CredentialSource::Minted);
    assert_eq!(
        cred.user, CLIENT_ID,
        "a service principal logs in as its client id"
    );
    assert_eq!(cred.host, PG_HOST, "host looked up from the endpoint");
    assert_eq!(cred.port, 5432);
    assert_eq!(cred.database, "databricks_postgres");
    assert_eq!(w.ws.count(TOKEN_ROUTE), 1);
    assert_eq!(w.ws.mints(), 1);
    assert_eq!(w.ws.count(ENDPOINT_ROUTE), 1);
    assert_eq!(
        w.kv.keys_with(".cred.").len(),
        1,
        "credential stored for other instances"
    );
    assert!(
        w.kv.keys_with(".lease.").is_empty(),
        "lease released after the mint"
    );

    w.clock.advance(TimeDelta::minutes(10));
    assert_eq!(source(&a), CredentialSource::Memory);
    let b = w.instance();
    assert_eq!(source(&b), CredentialSource::Kv);
    assert_eq!(source(&b), CredentialSource::Memory);
    w.clock
        .advance(TimeDelta::minutes(34) + TimeDelta::seconds(59));
    assert_eq!(
        source(&w.instance()),
        CredentialSource::Kv,
        "44:59 after minting: still reused"
    );
    assert_eq!(w.ws.mints(), 1);
    assert_eq!(
        w.ws.count(ENDPOINT_ROUTE),
        1,
        "host look-up cached with the credential"
    );
}

#[test]
fn remints_at_exactly_45_minutes_and_after() {
    let w = World::m2m();
    let a = w.instance();
    let first = block_on(a.credential()).unwrap().credential;
    w.clock.advance(TimeDelta::minutes(45));
    let Obtained {
        credential: second,
        source: src,
    } = block_on(a.credential()).unwrap();
    assert_eq!(src, CredentialSource::Minted, "stale at the boundary");
    assert_ne!(first.token, second.token);
    assert_eq!(w.ws.mints(), 2);
    assert_eq!(
        source(&w.instance()),
        CredentialSource::Kv,
        "the new one is shared"
    );
    w.clock.advance(TimeDelta::minutes(50));
    assert_eq!(source(&a), CredentialSource::Minted);
    assert_eq!(w.ws.mints(), 3);
}

#[test]
fn server_expiry_earlier_than_45_minutes_wins() {
    let w = World::m2m();
    w.ws.set_db_token_lifetime(TimeDelta::minutes(20));
    let a = w.instance();
    let cred = block_on(a.credential()).unwrap().credential;
    // expires 12:20:00.123; served until 2 minutes before.
    assert_eq!(cred.reuse_until().to_rfc3339(), "2026-02-06T12:18:00+00:00");
    w.clock
        .advance(TimeDelta::minutes(17) + TimeDelta::seconds(59));
    assert_eq!(source(&a), CredentialSource::Memory);
    w.clock.advance(TimeDelta::seconds(1));
    assert_eq!(source(&a), CredentialSource::Minted);
}

#[test]
fn autoscaling_expire_time_with_every_fraction_width() {
    for digits in [0, 3, 6, 9] {
        let w = World::m2m();
        w.ws.set_fraction_digits(digits);
        w.ws.set_db_token_lifetime(TimeDelta::minutes(30));
        let cred = block_on(w.instance().credential()).unwrap().credential;
        // Minted at 12:00:00 (+100 ms of lease settling); the fake adds 123 ms to its expiry.
        assert_eq!(
            cred.expires_at.timestamp(),
            w.clock.get().timestamp() + 1800,
            "{digits} digits"
        );
        let want_ms = if digits == 0 { 0 } else { 223 };
        assert_eq!(
            cred.expires_at.timestamp_subsec_millis(),
            want_ms,
            "{digits} digits"
        );
        assert_eq!(
            cred.reuse_until().timestamp(),
            (cred.expires_at - TimeDelta::minutes(2)).timestamp(),
            "{digits} digits"
        );
    }
}

fn provisioned_world() -> World {
    World::with_vars(&[
        ("databricks_host", "adb-1.cloud.databricks.com"),
        ("databricks_client_id", CLIENT_ID),
        ("databricks_client_secret", CLIENT_SECRET),
        ("lakebase_instance", INSTANCE),
        ("pgport", "6543"),
    ])
}

#[test]
fn provisioned_api_reads_expiration_time() {
    let w = provisioned_world();
    w.ws.set_db_token_lifetime(TimeDelta::minutes(30));
    w.ws.set_fraction_digits(6);
    let Obtained {
        credential: cred,
        source: src,
    } = block_on(w.instance().credential()).unwrap();
    assert_eq!(src, CredentialSource::Minted);
    assert_eq!(w.ws.count(PROVISIONED_ROUTE), 1);
    assert_eq!(w.ws.count(INSTANCE_ROUTE), 1);
    assert_eq!(cred.host, "instance-1.database.cloud.databricks.com");
    assert_eq!(cred.port, 6543);
    assert_eq!(
        cred.reuse_until().format("%H:%M:%S").to_string(),
        "12:28:00"
    );
    // A second mint sends a fresh request_id (the fake asserts it).
    w.clock.advance(TimeDelta::minutes(29));
    assert_eq!(source(&w.instance()), CredentialSource::Minted);
}

#[test]
fn unreadable_expiry_assumes_one_hour() {
    let w = provisioned_world();
    w.ws.set_provisioned_expiry_field("expire_time"); // the wrong field: as if the API changed
    w.ws.set_db_token_lifetime(TimeDelta::minutes(10));
    let cred = block_on(w.instance().credential()).unwrap().credential;
    assert_eq!(cred.expires_at, w.clock.get() + TimeDelta::hours(1));
    assert_eq!(cred.reuse_until(), w.clock.get() + TimeDelta::minutes(45));
}

#[test]
fn workspace_token_reused_then_refreshed_when_it_expires() {
    let w = World::m2m();
    let a = w.instance();
    block_on(a.credential()).unwrap();
    assert_eq!(w.ws.count(TOKEN_ROUTE), 1);
    // 45 minutes later the workspace token (1 h, minus a 60 s margin) is still good.
    w.clock.advance(TimeDelta::minutes(45));
    block_on(w.instance().credential()).unwrap();
    assert_eq!(
        w.ws.count(TOKEN_ROUTE),
        1,
        "workspace token reused across instances via kv"
    );
    assert_eq!(w.ws.mints(), 2);
    // 59 minutes after it was issued it is within the margin: a new one is fetched.
    w.clock.advance(TimeDelta::minutes(14));
    w.clock.advance(TimeDelta::seconds(1));
    w.clock.advance(TimeDelta::minutes(45));
    block_on(a.credential()).unwrap();
    assert_eq!(w.ws.count(TOKEN_ROUTE), 2);
}

#[test]
fn rejected_workspace_token_is_refreshed_once_and_retried() {
    let w = World::m2m();
    let a = w.instance();
    block_on(a.credential()).unwrap();
    w.ws.expire_workspace_tokens();
    w.clock.advance(TimeDelta::minutes(46));
    let Obtained {
        credential: _,
        source: src,
    } = block_on(a.credential()).unwrap();
    assert_eq!(src, CredentialSource::Minted);
    assert_eq!(w.ws.count(TOKEN_ROUTE), 2, "401 → new workspace token");
    // The first call of the second mint (the host look-up) got the 401 and was retried.
    assert_eq!(w.ws.count(ENDPOINT_ROUTE), 3);
    assert_eq!(w.ws.count(AUTOSCALING_ROUTE), 2);
}

#[test]
fn persistent_401_is_workspace_auth_after_one_refresh() {
    let w = World::m2m();
    for _ in 0..2 {
        w.ws.script(
            AUTOSCALING_ROUTE,
            Scripted::Status(
                401,
                None,
                r#"{"error_code":"UNAUTHENTICATED","message":"Invalid access token."}"#.into(),
            ),
        );
    }
    let e = block_on(w.instance().credential()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WorkspaceAuth);
    assert!(e.message().contains("databricks_client_secret"), "{e}");
    assert_eq!(w.ws.count(TOKEN_ROUTE), 2);
    assert_eq!(w.ws.count(AUTOSCALING_ROUTE), 2, "exactly one retry");
}

#[test]
fn retries_429_and_503_honouring_retry_after() {
    let w = World::m2m();
    w.ws.script(
        AUTOSCALING_ROUTE,
        Scripted::Status(
            429,
            Some("3"),
            r#"{"error_code":"REQUEST_LIMIT_EXCEEDED","message":"slow down"}"#.into(),
        ),
    );
    w.ws.script(
        AUTOSCALING_ROUTE,
        Scripted::Status(503, None, "<html>unavailable</html>".into()),
    );
    w.ws.script(AUTOSCALING_ROUTE, Scripted::Network("connection reset"));
    let Obtained {
        credential: _,
        source: src,
    } = block_on(w.instance().credential()).unwrap();
    assert_eq!(src, CredentialSource::Minted);
    assert_eq!(w.ws.count(AUTOSCALING_ROUTE), 4);
    assert_eq!(
        w.clock.long_sleeps(),
        vec![
            Duration::from_secs(3),
            Duration::from_secs(1),
            Duration::from_secs(1)
        ],
        "Retry-After honoured, 1 s by default"
    );
}

#[test]
fn gives_up_after_bounded_attempts_as_unavailable() {
    let w = World::m2m();
    for _ in 0..10 {
        w.ws.script(
            AUTOSCALING_ROUTE,
            Scripted::Status(
                503,
                Some("1"),
                r#"{"error_code":"TEMPORARILY_UNAVAILABLE","message":"try later"}"#.into(),
            ),
        );
    }
    let e = block_on(w.instance().credential()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.is_retryable());
    assert_eq!(
        w.ws.count(AUTOSCALING_ROUTE),
        4,
        "default policy: 4 attempts"
    );
    assert!(e.message().contains("4 attempts"), "{e}");
    assert!(e.message().contains("TEMPORARILY_UNAVAILABLE"), "{e}");

    // A Retry-After beyond the time budget is not waited for.
    let w = World::m2m();
    w.ws.script(
        AUTOSCALING_ROUTE,
        Scripted::Status(429, Some("60"), "{}".into()),
    );
    let c = w
        .instance()
        .with_retry_policy(RetryPolicy::default().max_delay(Duration::from_secs(60)));
    let e = block_on(c.credential()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(w.ws.count(AUTOSCALING_ROUTE), 1);
    assert!(w.clock.long_sleeps().is_empty());
}

#[test]
fn other_4xx_and_500_fail_fast_with_who_must_act() {
    let cases = [
        (
            403,
            r#"{"error_code":"PERMISSION_DENIED","message":"User does not have USE on project"}"#,
            ErrorKind::Permission,
            "PERMISSION_DENIED",
        ),
        (
            404,
            r#"{"error_code":"NOT_FOUND","message":"Endpoint not found"}"#,
            ErrorKind::NotFound,
            "lakebase_endpoint",
        ),
        (
            400,
            r#"{"error_code":"INVALID_PARAMETER_VALUE","message":"bad endpoint"}"#,
            ErrorKind::BadRequest,
            "INVALID_PARAMETER_VALUE",
        ),
        (500, "", ErrorKind::Unavailable, "empty body"),
        (
            409,
            "plain text conflict",
            ErrorKind::BadRequest,
            "plain text conflict",
        ),
    ];
    for (status, body, kind, needle) in cases {
        let w = World::m2m();
        w.ws.script(
            AUTOSCALING_ROUTE,
            Scripted::Status(status, Some("1"), body.into()),
        );
        let e = block_on(w.instance().credential()).unwrap_err();
        assert_eq!(e.kind(), kind, "{status}: {e}");
        assert!(e.message().contains(needle), "{status}: {e}");
        assert!(e.message().contains(&status.to_string()), "{status}: {e}");
        assert_eq!(w.ws.count(AUTOSCALING_ROUTE), 1, "{status} is not retried");
        assert!(w.clock.long_sleeps().is_empty());
    }
}

#[test]
fn bad_client_secret_is_workspace_auth_naming_the_variables() {
    let w = World::with_vars(&[
        ("databricks_host", HOST),
        ("databricks_client_id", CLIENT_ID),
        ("databricks_client_secret", "wrong-secret-value"),
        ("lakebase_endpoint", ENDPOINT),
    ]);
    let e = block_on(w.instance().credential()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WorkspaceAuth);
    assert!(e.message().contains("invalid_client"), "{e}");
    assert!(
        e.message().contains("databricks_client_id")
            && e.message().contains("databricks_client_secret"),
        "{e}"
    );
    assert_eq!(w.ws.count(TOKEN_ROUTE), 1, "not retried");
    assert_eq!(w.ws.mints(), 0);
}

#[test]
fn pat_user_comes_from_scim_and_pat_is_sent_as_bearer() {
    let w = World::with_vars(&[
        ("databricks_host", HOST),
        ("databricks_token", PAT),
        ("lakebase_endpoint", ENDPOINT),
        ("pghost", "db.example.com"),
    ]);
    let cred = block_on(w.instance().credential()).unwrap().credential;
    assert_eq!(cred.user, PAT_USER);
    assert_eq!(cred.host, "db.example.com", "configured host: no look-up");
    assert_eq!(w.ws.count(ENDPOINT_ROUTE), 0);
    assert_eq!(w.ws.count(ME_ROUTE), 1);
    assert_eq!(w.ws.count(TOKEN_ROUTE), 0, "a PAT needs no OAuth call");
}

#[test]
fn corrupt_or_old_records_are_misses() {
    for junk in [
        &b"not json"[..],
        br#"{"v":99,"token":"x"}"#,
        br#"{"v":1}"#,
        b"",
    ] {
        let w = World::m2m();
        let a = w.instance();
        block_on(a.credential()).unwrap();
        let key = w.kv.keys_with(".cred.").pop().unwrap();
        w.kv.put_raw(&key, junk);
        assert_eq!(
            source(&w.instance()),
            CredentialSource::Minted,
            "{:?}",
            String::from_utf8_lossy(junk)
        );
        assert_eq!(w.ws.mints(), 2);
        assert_eq!(
            source(&w.instance()),
            CredentialSource::Kv,
            "rewritten in the current format"
        );
    }
}

#[test]
fn failing_store_is_bypassed_not_fatal() {
    let w = World::m2m();
    w.kv.failing.set(true);
    let a = w.instance();
    assert_eq!(source(&a), CredentialSource::Minted);
    assert_eq!(source(&a), CredentialSource::Memory, "memory still works");
    assert_eq!(
        source(&w.instance()),
        CredentialSource::Minted,
        "no sharing without the store"
    );
    let db = block_on(a.connect(&w.pg)).expect("connects without a store");
    assert_eq!(db.source, CredentialSource::Memory);
}

#[test]
fn concurrent_requests_in_one_instance_share_one_mint() {
    let w = World::m2m();
    let a = w.instance();
    let results = block_on(futures::future::join_all((0..8).map(|_| a.credential())));
    let sources: Vec<_> = results.into_iter().map(|r| r.unwrap().source).collect();
    assert_eq!(w.ws.mints(), 1);
    assert_eq!(w.ws.count(TOKEN_ROUTE), 1);
    assert_eq!(
        sources
            .iter()
            .filter(|s| **s == CredentialSource::Minted)
            .count(),
        1
    );
    assert!(
        sources
            .iter()
            .skip(1)
            .all(|s| *s == CredentialSource::Memory)
    );
}

/// Spin runs up to 16 requests at once in one instance on one executor, where waiting on another
/// task panics: 16 cold requests must share one mint without any of them doing so.
#[test]
fn sixteen_cold_requests_in_one_instance_on_spins_executor() {
    let w = World::m2m();
    let a = w.instance();
    let results = run_like_spin((0..16).map(|_| task(a.connect(&w.pg))).collect());
    let sources: Vec<_> = results.into_iter().map(|r| r.unwrap().source).collect();
    assert_eq!(w.ws.mints(), 1, "{sources:?}");
    assert_eq!(w.ws.count(TOKEN_ROUTE), 1);
    assert_eq!(
        sources
            .iter()
            .filter(|s| **s == CredentialSource::Minted)
            .count(),
        1
    );
    assert_eq!(
        sources
            .iter()
            .filter(|s| **s == CredentialSource::Memory)
            .count(),
        15
    );
}

#[test]
fn remint_under_load_in_one_instance_on_spins_executor() {
    let w = World::m2m();
    let a = w.instance();
    block_on(a.credential()).unwrap();
    w.clock.advance(TimeDelta::minutes(45));
    let results = run_like_spin((0..16).map(|_| task(a.connect(&w.pg))).collect());
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(w.ws.mints(), 2, "one re-mint for sixteen requests");
    // Revoked while requests are in flight: one of them re-mints, the others reuse that.
    let current = block_on(a.credential())
        .unwrap()
        .credential
        .token
        .expose()
        .to_owned();
    w.pg.revoked.borrow_mut().insert(current);
    let results = run_like_spin((0..16).map(|_| task(a.connect(&w.pg))).collect());
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(w.ws.mints(), 3);
}

#[test]
fn a_failed_mint_answers_every_waiting_request_once() {
    let w = World::m2m();
    w.ws.script(
        AUTOSCALING_ROUTE,
        Scripted::Status(
            403,
            None,
            r#"{"error_code":"PERMISSION_DENIED","message":"no access"}"#.into(),
        ),
    );
    let a = w.instance();
    let results = run_like_spin((0..8).map(|_| task(a.credential())).collect());
    for r in &results {
        assert_eq!(r.as_ref().err().unwrap().kind(), ErrorKind::Permission);
    }
    assert_eq!(
        w.ws.count(AUTOSCALING_ROUTE),
        1,
        "the waiters got the same failure instead of trying again one by one"
    );
    // The next request tries anew.
    assert!(block_on(a.credential()).is_ok());
}

#[test]
fn concurrent_instances_defer_to_the_lease_holder() {
    let w = World::m2m();
    let instances: Vec<Client> = (0..4).map(|_| w.instance()).collect();
    let results = block_on(futures::future::join_all(
        instances.iter().map(|c| c.credential()),
    ));
    let sources: Vec<_> = results.into_iter().map(|r| r.unwrap().source).collect();
    assert_eq!(w.ws.mints(), 1, "{sources:?}");
    assert_eq!(
        sources
            .iter()
            .filter(|s| **s == CredentialSource::Kv)
            .count(),
        3
    );
}

#[test]
fn stale_lease_of_a_dead_instance_does_not_block() {
    let w = World::m2m();
    let a = w.instance();
    block_on(a.credential()).unwrap();
    let key =
        w.kv.keys_with(".cred.")
            .pop()
            .unwrap()
            .replace(".cred.", ".lease.");
    let until = (w.clock.get() + TimeDelta::seconds(5)).timestamp_millis();
    w.kv.put_raw(
        &key,
        format!(r#"{{"holder":"dead","until_ms":{until}}}"#).as_bytes(),
    );
    w.clock.advance(TimeDelta::minutes(46));
    // The lease ended long ago: mint at once.
    assert_eq!(source(&w.instance()), CredentialSource::Minted);
    assert!(w.clock.long_sleeps().is_empty());
}

#[test]
fn rejected_token_is_dropped_and_reminted_once() {
    let w = World::m2m();
    let a = w.instance();
    let first = block_on(a.connect(&w.pg)).unwrap();
    assert_eq!(first.source, CredentialSource::Minted);
    // Revoked behind the app's back: the cached token no longer logs in.
    w.pg.revoked
        .borrow_mut()
        .insert(first.credential.token.expose().to_owned());
    let b = w.instance();
    let second = block_on(b.connect(&w.pg)).unwrap();
    assert_eq!(second.source, CredentialSource::Minted);
    assert_ne!(second.credential.token, first.credential.token);
    assert_eq!(w.ws.mints(), 2, "exactly one re-mint");
    // The replacement is what the other instances see now.
    let third = block_on(w.instance().connect(&w.pg)).unwrap();
    assert_eq!(third.source, CredentialSource::Kv);
    assert_eq!(third.credential.token, second.credential.token);
    // The first instance still holds the revoked token in memory: it recovers too, and does not
    // delete the good record from the store.
    let again = block_on(a.connect(&w.pg)).unwrap();
    assert_eq!(again.credential.token, second.credential.token);
    assert_eq!(again.source, CredentialSource::Kv);
    assert_eq!(w.ws.mints(), 2);
}

#[test]
fn a_fresh_token_rejected_again_is_a_database_error() {
    let w = World::m2m();
    for _ in 0..2 {
        w.pg.fail_next
            .borrow_mut()
            .push_back("FATAL: password authentication failed for user \"x\" (28P01)".into());
    }
    let e = block_on(w.instance().connect(&w.pg)).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Database);
    assert_eq!(e.sqlstate(), Some("28P01"));
    assert!(e.is_auth());
    assert!(e.message().contains("pguser"), "{e}");
    assert_eq!(w.ws.mints(), 2, "one re-mint, no loop");
}

#[test]
fn transient_connect_failures_are_retried_then_unavailable() {
    let w = World::m2m();
    w.pg.fail_next
        .borrow_mut()
        .push_back("Connection refused (os error 111)".into());
    let db = block_on(w.instance().connect(&w.pg)).unwrap();
    assert_eq!(db.source, CredentialSource::Minted);
    assert_eq!(w.clock.long_sleeps(), vec![Duration::from_secs(1)]);

    let w = World::m2m();
    for _ in 0..10 {
        w.pg.fail_next
            .borrow_mut()
            .push_back("Connection refused (os error 111)".into());
    }
    let e = block_on(w.instance().connect(&w.pg)).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(w.ws.mints(), 1, "not an auth failure: no re-mint");

    let w = World::m2m();
    w.pg.fail_next
        .borrow_mut()
        .push_back("db error: FATAL: role \"x\" does not exist (28000)".into());
    let e = block_on(w.instance().connect(&w.pg)).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Permission);
    assert_eq!(e.sqlstate(), Some("28000"));
}

/// Every Debug and Display of every value and error of a run, including their sources.
fn all_text(e: &lakebase::Error) -> String {
    let mut out = format!("{e} {e:?}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    out
}

#[test]
fn no_secret_in_any_debug_or_display() {
    let w = World::m2m();
    let a = w.instance();
    let db = block_on(a.connect(&w.pg)).unwrap();
    let token = db.credential.token.expose().to_owned();
    let mut text = format!("{:?} {:?} {:?}", db.credential, a.config(), db.source);

    // Errors on every path: logins rejected twice (the fake's message echoes the whole
    // connection string with the password), 5xx bodies and network errors that echo a secret.
    w.pg.reject_all.set(true);
    w.clock.advance(TimeDelta::minutes(46));
    let e = block_on(a.connect(&w.pg)).err().unwrap();
    text.push_str(&all_text(&e));
    w.ws.script(
        AUTOSCALING_ROUTE,
        Scripted::Status(
            500,
            None,
            format!(r#"{{"error_code":"INTERNAL","message":"echo {CLIENT_SECRET}"}}"#),
        ),
    );
    // Past the server's expiry of the last token: no credential is served through the outage.
    w.clock.advance(TimeDelta::minutes(60));
    let e = block_on(w.instance().credential()).unwrap_err();
    text.push_str(&all_text(&e));
    w.ws.script(
        AUTOSCALING_ROUTE,
        Scripted::Network("reset while sending dose0123456789secretvalue"),
    );
    w.ws.script(AUTOSCALING_ROUTE, Scripted::Status(400, None, "x".into()));
    let e = block_on(w.instance().credential()).unwrap_err();
    text.push_str(&all_text(&e));

    let pat = World::with_vars(&[
        ("databricks_host", HOST),
        ("databricks_token", PAT),
        ("lakebase_endpoint", ENDPOINT),
    ]);
    pat.ws.script(
        ME_ROUTE,
        Scripted::Status(403, None, format!("forbidden for {PAT}")),
    );
    let e = block_on(pat.instance().credential()).unwrap_err();
    text.push_str(&all_text(&e));
    text.push_str(&format!("{:?}", pat.instance().config()));

    for secret in [token.as_str(), CLIENT_SECRET, PAT] {
        assert!(!text.contains(secret), "secret leaked: {text}");
    }
    for minted in w.ws.minted() {
        assert!(!text.contains(&minted), "token leaked: {text}");
    }
    // The store holds the token (it is the cache), but never the client secret.
    assert!(!w.kv.dump().contains(CLIENT_SECRET));
}

// ---- trust nothing read back, bound everything ---------------------------------------------

/// Whoever can write the store but does not hold the workspace secret cannot redirect the
/// database: a forged record of any shape, at every key, is a miss and the app mints.
#[test]
fn forged_records_are_misses_and_never_redirect() {
    let w = World::m2m();
    block_on(w.instance().credential()).unwrap();
    let far = (w.clock.get() + TimeDelta::days(3650)).timestamp();
    let now = w.clock.get().timestamp();
    let forged = format!(
        r#"{{"v":2,"token":"forged-token-0123456789","user":"{CLIENT_ID}","host":"127.0.0.2","port":5432,"database":"databricks_postgres","minted_at":{now},"expires_at":{far}}}"#
    );
    for key in w.kv.keys_with("lakebase.") {
        w.kv.put_raw(&key, forged.as_bytes());
    }
    let fresh = w.instance();
    let db = block_on(fresh.connect(&w.pg)).unwrap();
    assert_eq!(db.source, CredentialSource::Minted);
    assert_eq!(
        db.credential.host, PG_HOST,
        "the configured (looked-up) host"
    );
    assert_ne!(db.credential.token.expose(), "forged-token-0123456789");
    assert!(
        w.pg.logins
            .borrow()
            .iter()
            .all(|(p, _)| !p.contains("forged")),
        "the forged token was never sent"
    );
    // What the app wrote back is sealed: no token in clear in the store.
    let dump = w.kv.dump();
    assert!(!dump.contains(db.credential.token.expose()), "{dump}");
}

/// A record sealed by an app with another secret (another principal's, or a rotated secret)
/// does not open: the token it holds is never used.
#[test]
fn a_record_sealed_with_another_secret_is_a_miss() {
    let w = World::m2m();
    let first = block_on(w.instance().credential()).unwrap().credential;
    let other = World::with_vars(&[
        ("databricks_host", HOST),
        ("databricks_client_id", CLIENT_ID),
        ("databricks_client_secret", "another-secret-0123456789"),
        ("lakebase_endpoint", ENDPOINT),
    ]);
    let config = block_on(Config::load(&other.vars)).unwrap();
    let c = Lakebase::new(config, w.ws.clone(), w.kv.clone(), w.clock.clone());
    let e = block_on(c.credential()).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::WorkspaceAuth,
        "it had to mint, and the workspace refused the wrong secret: {e}"
    );
    assert!(!all_text(&e).contains(first.token.expose()));
}

/// A workspace that accepts the request and never answers costs a bounded time: each call
/// times out (10 s), the whole load gives up (25 s), as `unavailable`.
#[test]
fn a_hung_workspace_is_bounded() {
    let w = World::m2m();
    for _ in 0..10 {
        w.ws.script(AUTOSCALING_ROUTE, Scripted::Hang);
    }
    let started = w.clock.get();
    let a = w.instance();
    let results = run_like_spin((0..4).map(|_| task(a.credential())).collect());
    let waited = w.clock.get() - started;
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }
    assert!(
        waited <= TimeDelta::seconds(60),
        "bounded: {waited} of simulated time"
    );
    assert!(w.ws.count(AUTOSCALING_ROUTE) >= 1);
    // The next request tries anew and succeeds once the workspace answers.
    w.ws.scripts_clear(AUTOSCALING_ROUTE);
    assert!(block_on(a.credential()).is_ok());
}

/// Transport failures that no retry can fix fail at once as configuration, naming what to
/// fix; others are retried.
#[test]
fn transport_configuration_errors_are_not_retried() {
    for (why, hint) in [
        ("ErrorCode::HttpRequestDenied", "allowed_outbound_hosts"),
        (
            "DnsError(DnsErrorPayload { rcode: None })",
            "does not resolve",
        ),
        ("TlsCertificateError", "certificate"),
    ] {
        let w = World::m2m();
        w.ws.script(TOKEN_ROUTE, Scripted::Network(why));
        let e = block_on(w.instance().credential()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Configuration, "{why}: {e}");
        assert_eq!(e.variable(), Some("databricks_host"));
        assert!(e.message().contains(hint), "{e}");
        assert_eq!(w.ws.count(TOKEN_ROUTE), 1, "{why}: not retried");
        assert!(w.clock.long_sleeps().is_empty());
    }
}

/// An error body that echoes what we sent (the Basic header, the client secret, the bearer
/// token) never reaches a message, and a long one is cut.
#[test]
fn echoed_secrets_are_scrubbed_and_long_bodies_cut() {
    use base64::Engine as _;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let w = World::m2m();
    w.ws.script(
        TOKEN_ROUTE,
        Scripted::Status(
            401,
            None,
            format!(
                r#"{{"error":"invalid_client","error_description":"bad Basic {basic} secret={CLIENT_SECRET} {}"}}"#,
                "x".repeat(5000)
            ),
        ),
    );
    let e = block_on(w.instance().credential()).unwrap_err();
    let text = all_text(&e);
    assert!(!text.contains(&basic), "{text}");
    assert!(!text.contains(CLIENT_SECRET), "{text}");
    assert!(text.len() < 2000, "cut: {} characters", text.len());

    // The workspace token, echoed by the credential API.
    let w = World::m2m();
    let a = w.instance();
    block_on(a.credential()).unwrap();
    let bearer =
        w.ws.workspace_tokens()
            .into_iter()
            .find(|t| t != PAT)
            .expect("the OAuth token in use");
    w.clock.advance(TimeDelta::minutes(46));
    w.ws.script(
        AUTOSCALING_ROUTE,
        Scripted::Status(
            403,
            None,
            format!(r#"{{"error_code":"PERMISSION_DENIED","message":"token {bearer} may not"}}"#),
        ),
    );
    let e = block_on(a.credential()).unwrap_err();
    assert!(!all_text(&e).contains(&bearer), "{}", all_text(&e));
}

/// A lease holder that fails deletes its lease: the instance waiting for it stops waiting at
/// once and mints itself, instead of waiting out the lease.
#[test]
fn a_waiter_notices_that_the_lease_holder_gave_up() {
    let w = World::m2m();
    w.ws.script(
        AUTOSCALING_ROUTE,
        Scripted::Status(
            403,
            None,
            r#"{"error_code":"PERMISSION_DENIED","message":"not yet"}"#.into(),
        ),
    );
    let (a, b) = (w.instance(), w.instance());
    let started = w.clock.get();
    let results = run_like_spin(vec![task(a.credential()), task(b.credential())]);
    let oks = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(oks, 1, "one failed with the 403, the other minted after it");
    assert!(
        w.clock.get() - started < TimeDelta::seconds(5),
        "did not wait out the 10 s lease: {}",
        w.clock.get() - started
    );
}

/// A store that never answers is bypassed after its deadline: the request still gets a
/// credential (minted), in bounded time.
#[test]
fn a_hung_store_is_bypassed_in_bounded_time() {
    let w = World::m2m();
    w.kv.hanging.set(true);
    let started = w.clock.get();
    let a = w.instance();
    let Obtained {
        credential: _,
        source,
    } = block_on(a.credential()).unwrap();
    assert_eq!(source, CredentialSource::Minted);
    assert!(
        w.clock.get() - started <= TimeDelta::seconds(3),
        "one timeout, then the store is skipped: {}",
        w.clock.get() - started
    );
    // Past the reuse limit, still skipped (within its 30 s back-off)? No: 45 minutes later the
    // store is tried again, times out once more, and the request still succeeds.
    w.clock.advance(TimeDelta::minutes(46));
    let before = w.clock.get();
    assert_eq!(
        block_on(a.credential()).unwrap().source,
        CredentialSource::Minted
    );
    assert!(w.clock.get() - before <= TimeDelta::seconds(3));
}

/// A database connect that never answers is given up after 10 s and retried.
#[test]
fn a_hung_database_connect_is_bounded_and_retried() {
    let w = World::m2m();
    w.pg.fail_next.borrow_mut().push_back(HANG.to_owned());
    let started = w.clock.get();
    let db = block_on(w.instance().connect(&w.pg)).unwrap();
    assert_eq!(db.source, CredentialSource::Minted);
    let waited = w.clock.get() - started;
    assert!(
        waited >= TimeDelta::seconds(10) && waited <= TimeDelta::seconds(15),
        "one 10 s deadline and a 1 s back-off: {waited}"
    );
}

/// While the database answers, one open at a time goes without a timer of its own (a host timer
/// per open costs 5 % of a warm request on Spin); when that open hangs, the instance's other
/// opens are still cut at 10 s, and so is any open after a quiet spell.
#[test]
fn with_an_untimed_open_hanging_the_others_are_still_bounded() {
    let w = World::m2m();
    let a = w.instance();
    block_on(a.connect(&w.pg)).unwrap();
    // Two hangs: the first open takes the untimed slot and never ends; the second, meanwhile,
    // is timed: cut at 10 s and retried.
    w.pg.fail_next.borrow_mut().push_back(HANG.to_owned());
    w.pg.fail_next.borrow_mut().push_back(HANG.to_owned());
    let started = w.clock.get();
    let untimed = Box::pin(a.connect(&w.pg));
    let timed = Box::pin(async {
        yield_now().await;
        a.connect(&w.pg).await
    });
    match block_on(futures::future::select(untimed, timed)) {
        futures::future::Either::Right((db, _)) => {
            assert_eq!(db.unwrap().source, CredentialSource::Memory)
        }
        futures::future::Either::Left(_) => panic!("the untimed open ended; it hangs"),
    }
    let waited = w.clock.get() - started;
    assert!(
        waited >= TimeDelta::seconds(10) && waited <= TimeDelta::seconds(15),
        "the second open had its 10 s deadline: {waited}"
    );
    // A quiet spell (over 5 s since the last open that succeeded started): timed again.
    w.clock.advance(TimeDelta::seconds(30));
    w.pg.fail_next.borrow_mut().push_back(HANG.to_owned());
    let started = w.clock.get();
    block_on(a.connect(&w.pg)).unwrap();
    let waited = w.clock.get() - started;
    assert!(
        waited >= TimeDelta::seconds(10) && waited <= TimeDelta::seconds(15),
        "after a quiet spell the open had its deadline: {waited}"
    );
}

/// An instance that found neither record nor lease, and whose lease check comes after another
/// instance has minted, written its record and let its lease go (cold instances a few
/// milliseconds apart, as on Spin's WASIp2), takes that record instead of minting again.
#[test]
fn a_record_written_while_the_lease_settles_is_taken_instead_of_a_second_mint() {
    let w = World::m2m();
    // Another instance's record, held back until B has written its lease.
    block_on(w.instance().credential()).unwrap();
    let key = w.kv.keys_with(".cred.").pop().expect("a credential record");
    let record = w.kv.dump_value(&key);
    w.kv.data.borrow_mut().clear();
    let b = w.instance();
    let results = run_like_spin(vec![
        task(async { b.credential().await.map(|o| o.source) }),
        task(async {
            while w.kv.keys_with(".lease.").is_empty() {
                yield_now().await;
            }
            w.kv.put_raw(&key, &record);
            Ok(CredentialSource::Memory)
        }),
    ]);
    assert_eq!(results[0].as_ref().unwrap(), &CredentialSource::Kv);
    assert_eq!(w.ws.mints(), 1, "the first instance's mint only");
}

/// A lease that claims to last for centuries (written by an instance whose clock is far
/// ahead) holds other instances off for at most 10 s of their own time.
#[test]
fn a_far_future_lease_is_honoured_for_ten_seconds_at_most() {
    let w = World::m2m();
    // A's clock is in 2300; its mint hangs after it wrote its lease.
    w.ws.script(AUTOSCALING_ROUTE, Scripted::Hang);
    let ahead = ManualClock::at("2300-01-01T00:00:00Z");
    let config = block_on(Config::load(&w.vars)).unwrap();
    let a = Lakebase::new(config, w.ws.clone(), w.kv.clone(), ahead);
    let b = w.instance();
    let started = w.clock.get();
    let results = run_like_spin(vec![
        task(async { a.credential().await.map(|_| ()) }),
        task(async {
            // B starts once A's lease is there.
            while w.kv.keys_with(".lease.").is_empty() {
                yield_now().await;
            }
            b.credential().await.map(|Obtained { source, .. }| {
                assert_eq!(source, CredentialSource::Minted);
            })
        }),
    ]);
    assert!(results[1].is_ok(), "{:?}", results[1]);
    let waited = w.clock.get() - started;
    assert!(
        waited <= TimeDelta::seconds(25),
        "B waited {waited} of its time, not until 2300"
    );
}

/// The troubleshooting table (docs/troubleshooting.md) cannot drift: for each error kind, the "typical message"
/// (its first backtick-quoted text, `…` standing for any text) is what the library says for
/// that kind, produced here.
#[test]
fn the_readme_troubleshooting_table_matches_the_errors() {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/troubleshooting.md"
    ))
    .unwrap();
    let table = readme
        .split("# Troubleshooting")
        .nth(1)
        .expect("a Troubleshooting section")
        .split("\n\n")
        .find(|block| block.contains("| kind |"))
        .expect("the table");
    let mut produced: Vec<(ErrorKind, String)> = Vec::new();
    let err = |w: &World| block_on(w.instance().credential()).unwrap_err();
    // configuration: no endpoint.
    let e = block_on(Config::load(&MapVars::new(&[
        ("databricks_host", HOST),
        ("databricks_client_id", CLIENT_ID),
        ("databricks_client_secret", CLIENT_SECRET),
    ])))
    .unwrap_err();
    produced.push((e.kind(), e.to_string()));
    // workspace_auth, permission, not_found, unavailable, bad_request: from the API.
    for (route, status, body) in [
        (
            TOKEN_ROUTE,
            401,
            r#"{"error":"invalid_client","error_description":"Client authentication failed"}"#,
        ),
        (
            AUTOSCALING_ROUTE,
            403,
            r#"{"error_code":"PERMISSION_DENIED","message":"no"}"#,
        ),
        (
            AUTOSCALING_ROUTE,
            404,
            r#"{"error_code":"NOT_FOUND","message":"no such endpoint"}"#,
        ),
        (
            AUTOSCALING_ROUTE,
            400,
            r#"{"error_code":"INVALID_PARAMETER_VALUE","message":"bad"}"#,
        ),
    ] {
        let w = World::m2m();
        w.ws.script(route, Scripted::Status(status, None, body.into()));
        let e = err(&w);
        produced.push((e.kind(), e.to_string()));
    }
    let w = World::m2m();
    for _ in 0..10 {
        w.ws.script(
            AUTOSCALING_ROUTE,
            Scripted::Status(503, Some("1"), "busy".into()),
        );
    }
    let e = err(&w);
    produced.push((e.kind(), e.to_string()));
    // database: a fresh token rejected again.
    let w = World::m2m();
    for _ in 0..2 {
        w.pg.fail_next
            .borrow_mut()
            .push_back("FATAL: password authentication failed for user \"x\" (28P01)".into());
    }
    let e = block_on(w.instance().connect(&w.pg)).err().unwrap();
    produced.push((e.kind(), e.to_string()));

    let mut checked = 0;
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let kind = cells[0].trim_start_matches("| ").trim_matches('`');
        // The first code span of the message cell (opened by one or more backticks).
        let cell = cells[1];
        let ticks = cell.chars().take_while(|c| *c == '`').count();
        let typical = cell[ticks..]
            .split(&"`".repeat(ticks))
            .next()
            .unwrap()
            .trim();
        let fragments: Vec<&str> = typical
            .split('…')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        let matching = produced.iter().any(|(k, message)| {
            k.as_str() == kind && {
                let mut at = 0;
                fragments.iter().all(|f| match message[at..].find(f) {
                    Some(i) => {
                        at += i + f.len();
                        true
                    }
                    None => false,
                })
            }
        });
        assert!(
            matching,
            "README troubleshooting row `{kind}`: no {kind} error says {typical:?}; produced: {produced:#?}"
        );
        checked += 1;
    }
    assert!(checked >= 7, "every kind has a row ({checked})");
}

#[test]
fn connect_now_serves_only_a_credential_in_memory() {
    use lakebase::ConnectOptions;
    let w = World::m2m();
    let c = w.instance();
    // Nothing in memory yet: a clear error, no mint, no login.
    let e = c
        .connect_now(&w.pg, &ConnectOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("asynchronous call first"), "{e}");
    assert_eq!(w.ws.mints(), 0);
    assert!(w.pg.logins.borrow().is_empty());

    // After one asynchronous call, it connects with that credential, to any database.
    let cred = block_on(c.credential()).unwrap().credential;
    let db = c
        .connect_now(&w.pg, &ConnectOptions::default().database("sales"))
        .unwrap();
    assert_eq!(db.source, CredentialSource::Memory);
    assert_eq!(db.credential.token, cred.token);
    assert_eq!(db.credential.database, "sales");

    // A rejected token is reported (no re-mint can happen without waiting), without the token.
    w.pg.revoked
        .borrow_mut()
        .insert(cred.token.expose().to_owned());
    let e = c
        .connect_now(&w.pg, &ConnectOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Database);
    assert_eq!(e.sqlstate(), Some("28P01"));
    assert!(e.message().contains("next asynchronous connect"), "{e}");
    assert!(!all_text(&e).contains(cred.token.expose()), "{e:?}");
    assert_eq!(w.ws.mints(), 1);

    // The next asynchronous connect recovers.
    let db = block_on(c.connect(&w.pg)).unwrap();
    assert_eq!(db.source, CredentialSource::Minted);
    assert_eq!(w.ws.mints(), 2);
}

#[test]
fn the_ca_root_of_a_connection_wins_over_the_configured_one() {
    use lakebase::ConnectOptions;
    // The smallest text that parses: one DER SEQUENCE.
    let pem = "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n";
    let w = World::with_vars(&[
        ("databricks_host", HOST),
        ("databricks_client_id", CLIENT_ID),
        ("databricks_client_secret", CLIENT_SECRET),
        ("lakebase_endpoint", ENDPOINT),
        ("lakebase_ca_root", pem),
    ]);
    let c = w.instance();
    block_on(c.connect(&w.pg)).unwrap();
    let options = ConnectOptions::default().ca_root("caller's PEM");
    block_on(c.connect_with(&w.pg, &options)).unwrap();
    c.connect_now(&w.pg, &options).unwrap();
    assert_eq!(
        *w.pg.ca_roots.borrow(),
        vec![
            Some(pem.trim().to_owned()),
            Some("caller's PEM".to_owned()),
            Some("caller's PEM".to_owned())
        ]
    );
}

#[test]
fn invalidate_drops_only_the_rejected_password() {
    let w = World::m2m();
    let a = w.instance();
    let cred = block_on(a.credential()).unwrap().credential;
    assert!(
        !block_on(a.invalidate(&Secret::new("not the token"))),
        "nothing dropped"
    );
    assert_eq!(source(&a), CredentialSource::Memory);
    assert!(block_on(a.invalidate(&cred.token)));
    // Gone from memory and from the store: another instance mints anew.
    assert_eq!(source(&w.instance()), CredentialSource::Minted);
    assert!(!block_on(a.invalidate(&cred.token)), "already gone");
}

#[test]
fn a_configuration_built_in_code_is_validated_like_variables() {
    let built = Config::builder()
        .set("databricks_host", HOST)
        .set("databricks_client_id", CLIENT_ID)
        .set("databricks_client_secret", CLIENT_SECRET)
        .set("lakebase_endpoint", ENDPOINT)
        .set("pgport", " ")
        .build()
        .unwrap();
    let w = World::m2m();
    assert_eq!(built, block_on(Config::load(&w.vars)).unwrap());
    // The typed methods set the same variables.
    let typed = Config::builder()
        .databricks_host(HOST)
        .client_credentials(CLIENT_ID, CLIENT_SECRET)
        .lakebase_endpoint(ENDPOINT)
        .pgport(" ")
        .build()
        .unwrap();
    assert_eq!(typed, built);
    assert!(!format!("{built:?}").contains(CLIENT_SECRET));

    let e = Config::builder()
        .set("databricks_host", HOST)
        .set("pgport", "0")
        .set("databricks_client_id", CLIENT_ID)
        .set("databricks_client_secret", CLIENT_SECRET)
        .set("lakebase_endpoint", ENDPOINT)
        .build()
        .unwrap_err();
    assert_eq!(e.variable(), Some("pgport"));

    let builder = Config::builder()
        .set("databricks_client_secret", CLIENT_SECRET)
        .set("databrick_host", HOST);
    assert!(
        !format!("{builder:?}").contains(CLIENT_SECRET),
        "{builder:?}"
    );
    let e = builder.build().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Configuration);
    assert!(
        e.message()
            .contains("`databrick_host` is not a Lakebase variable"),
        "{e}"
    );
}

// ---- days, not minutes: outages, refresh ahead, remembered rejections, idle sessions ----------

fn workspace_down(w: &World, calls: usize) {
    for _ in 0..calls {
        w.ws.script(
            AUTOSCALING_ROUTE,
            Scripted::Status(
                503,
                None,
                r#"{"error_code":"TEMPORARILY_UNAVAILABLE","message":"down for maintenance"}"#
                    .into(),
            ),
        );
    }
}

fn at(hms: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(&format!("2026-02-06T{hms}Z"))
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn advance_to(w: &World, hms: &str) {
    let by = at(hms) - w.clock.get();
    assert!(by >= TimeDelta::zero(), "the clock is past {hms} already");
    w.clock.advance(by);
}

#[test]
fn a_workspace_outage_past_the_reuse_limit_serves_the_credential_until_near_its_expiry() {
    let w = World::m2m();
    let a = w.instance();
    let first = block_on(a.connect(&w.pg)).unwrap();
    assert_eq!(first.source, CredentialSource::Minted);
    // Down from 12:44, past the reuse limit (12:45), until 12:56.
    workspace_down(&w, 1000);
    advance_to(&w, "12:45:01");
    let before = w.clock.get();
    let served = block_on(a.connect(&w.pg)).unwrap();
    assert_eq!(served.credential.token, first.credential.token);
    assert_eq!(served.source, CredentialSource::Memory);
    // Serve first: the request that tries waits at most a second on the workspace.
    let waited = w.clock.get() - before;
    assert!(waited <= TimeDelta::milliseconds(1200), "waited {waited}");
    let tried = w.ws.mints();
    assert!(
        (2..=3).contains(&tried),
        "one short refresh attempt: {tried}"
    );
    // Backing off: the next requests serve it without trying, in this instance and in a cold one
    // (which finds the record and the lease that holds until the next try).
    for _ in 0..5 {
        let again = block_on(a.connect(&w.pg)).unwrap();
        assert_eq!(again.credential.token, first.credential.token);
    }
    let cold = block_on(w.instance().connect(&w.pg)).unwrap();
    assert_eq!(cold.credential.token, first.credential.token);
    assert_eq!(cold.source, CredentialSource::Kv);
    assert_eq!(w.ws.mints(), tried, "no refresh while backing off");
    // Every request until 12:56 is answered, with a bounded number of refresh attempts.
    while w.clock.get() < at("12:56:00") {
        let c = block_on(a.connect(&w.pg)).unwrap();
        assert_eq!(c.credential.token, first.credential.token);
        w.clock.advance(TimeDelta::seconds(1));
    }
    let attempts = w.ws.mints() - 1;
    assert!(
        (5..=40).contains(&attempts),
        "backed off, not per request: {attempts} credential calls in 11 minutes"
    );
    // Back at 12:56: the next try mints a new credential.
    w.ws.scripts_clear(AUTOSCALING_ROUTE);
    w.clock.advance(TimeDelta::seconds(61));
    let fresh = block_on(a.connect(&w.pg)).unwrap();
    assert_eq!(fresh.source, CredentialSource::Minted);
    assert_ne!(fresh.credential.token, first.credential.token);
    let cold = block_on(w.instance().connect(&w.pg)).unwrap();
    assert_eq!(cold.credential.token, fresh.credential.token);
}

#[test]
fn an_outage_past_the_servers_expiry_is_unavailable_with_the_reason() {
    let w = World::m2m();
    let a = w.instance();
    let first = block_on(a.credential()).unwrap().credential;
    // Minted at 12:00:00.1 (after the lease settled), expiring at 13:00: about 12:58.
    assert!((first.serve_until() - at("12:58:00")).abs() < TimeDelta::seconds(1));
    workspace_down(&w, 1000);
    advance_to(&w, "12:57:00");
    assert_eq!(
        block_on(a.credential()).unwrap().credential.token,
        first.token
    );
    advance_to(&w, "12:58:00");
    let e = block_on(a.credential()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("TEMPORARILY_UNAVAILABLE"), "{e}");
    // A cold instance does not serve the record either.
    let e = block_on(w.instance().credential()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
}

#[test]
fn an_outage_never_hides_a_configuration_that_must_change() {
    let w = World::m2m();
    let a = w.instance();
    block_on(a.credential()).unwrap();
    advance_to(&w, "12:45:01");
    w.ws.script(
        AUTOSCALING_ROUTE,
        Scripted::Status(
            403,
            None,
            r#"{"error_code":"PERMISSION_DENIED","message":"no access"}"#.into(),
        ),
    );
    let e = block_on(a.credential()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permission);
}

#[test]
fn refresh_ahead_replaces_the_credential_before_its_reuse_limit() {
    let w = World::m2m();
    let a = w.instance();
    let first = block_on(a.credential()).unwrap().credential;
    // Reused from 12:00:00.1 to 12:45:00.1: refreshed from 12:40:30.1.
    let from = first.refresh_from();
    assert_eq!(from, at("12:40:30") + TimeDelta::milliseconds(100));
    w.clock
        .advance(from - w.clock.get() - TimeDelta::milliseconds(1));
    assert!(!a.refresh_due());
    block_on(a.refresh());
    assert_eq!(w.ws.mints(), 1, "not due: nothing done");
    w.clock.advance(TimeDelta::milliseconds(1));
    assert!(a.refresh_due());
    block_on(a.refresh());
    assert_eq!(w.ws.mints(), 2);
    assert!(!a.refresh_due(), "the new one is not due");
    let Obtained {
        credential: c,
        source,
    } = block_on(a.credential()).unwrap();
    assert_eq!(source, CredentialSource::Memory);
    assert_ne!(c.token, first.token);
    // Two instances due at the same time: one mints, the other takes its record.
    let w2 = World::m2m();
    let (x, y) = (w2.instance(), w2.instance());
    block_on(x.credential()).unwrap();
    block_on(y.credential()).unwrap();
    advance_to(&w2, "12:41:00");
    assert!(x.refresh_due() && y.refresh_due());
    block_on(x.refresh());
    block_on(y.refresh());
    assert_eq!(w2.ws.mints(), 2, "one mint for both instances");
    assert_eq!(
        block_on(x.credential()).unwrap().credential.token,
        block_on(y.credential()).unwrap().credential.token
    );
}

#[test]
fn past_the_reuse_limit_a_host_that_refreshes_after_the_response_serves_at_once() {
    let w = World::m2m();
    let a = w.instance().with_refresh_after_response();
    let first = block_on(a.credential()).unwrap().credential;
    workspace_down(&w, 1000);
    advance_to(&w, "12:45:01");
    assert!(a.refresh_due(), "past the reuse limit, still accepted");
    // The request is answered without a single call to the workspace…
    let before = w.clock.get();
    let got = block_on(a.credential()).unwrap();
    assert_eq!(
        (got.credential.token, got.source),
        (first.token.clone(), CredentialSource::Memory)
    );
    assert_eq!(w.clock.get(), before, "no wait at all");
    assert_eq!(w.ws.mints(), 1);
    // …and the refresh after it fails, backs off, and keeps the credential.
    block_on(a.refresh());
    assert!(w.ws.mints() > 1);
    assert!(!a.refresh_due(), "backing off");
    w.ws.scripts_clear(AUTOSCALING_ROUTE);
    w.clock.advance(TimeDelta::seconds(2));
    assert!(a.refresh_due());
    block_on(a.refresh());
    let now = block_on(a.credential()).unwrap();
    assert_ne!(
        now.credential.token, first.token,
        "renewed after the response"
    );
    assert!(!a.refresh_due());
}

#[test]
fn a_failed_refresh_ahead_keeps_the_credential_and_backs_off() {
    let w = World::m2m();
    let a = w.instance();
    let first = block_on(a.credential()).unwrap().credential;
    workspace_down(&w, 1000);
    advance_to(&w, "12:41:00");
    block_on(a.refresh());
    let tried = w.ws.mints();
    assert!(tried > 1);
    assert!(!a.refresh_due(), "backing off");
    let Obtained {
        credential: c,
        source,
    } = block_on(a.credential()).unwrap();
    assert_eq!((c.token, source), (first.token, CredentialSource::Memory));
    assert_eq!(w.ws.mints(), tried);
}

/// OAuth M2M with a `pguser` the database rejects every token for.
fn wrong_role() -> World {
    let w = World::with_vars(&[
        ("databricks_host", HOST),
        ("databricks_client_id", CLIENT_ID),
        ("databricks_client_secret", CLIENT_SECRET),
        ("lakebase_endpoint", ENDPOINT),
        ("pguser", "no_such_role"),
    ]);
    w.pg.reject_all.set(true);
    w
}

#[test]
fn a_wrong_role_is_remembered_instead_of_minting_per_request() {
    let w = wrong_role();
    let a = w.instance();
    let first = block_on(a.connect(&w.pg)).unwrap_err();
    assert_eq!(first.kind(), ErrorKind::Database);
    assert_eq!(first.sqlstate(), Some("28P01"));
    assert!(first.message().contains("`no_such_role`"), "{first}");
    assert_eq!(w.ws.mints(), 2, "one re-mint");
    let logins = w.pg.logins.borrow().len();
    // The same error at once, without a login or a mint, in this instance…
    for _ in 0..10 {
        let e = block_on(a.connect(&w.pg)).unwrap_err();
        assert_eq!(e.to_string(), first.to_string());
        assert_eq!(e.sqlstate(), Some("28P01"));
    }
    assert_eq!(w.pg.logins.borrow().len(), logins);
    // …and in other instances, after one rejected login each.
    for _ in 0..5 {
        let e = block_on(w.instance().connect(&w.pg)).unwrap_err();
        assert_eq!(e.to_string(), first.to_string());
    }
    assert_eq!(w.ws.mints(), 2);
    // After 30 s the next request tries again (one re-mint), then holds 60 s.
    w.clock.advance(TimeDelta::seconds(30));
    block_on(a.connect(&w.pg)).unwrap_err();
    assert_eq!(w.ws.mints(), 3);
    w.clock.advance(TimeDelta::seconds(59));
    block_on(a.connect(&w.pg)).unwrap_err();
    assert_eq!(w.ws.mints(), 3, "held twice as long");
    // The role is created: once the hold ends, requests succeed again.
    w.pg.reject_all.set(false);
    w.clock.advance(TimeDelta::seconds(1));
    let ok = block_on(a.connect(&w.pg)).unwrap();
    assert_eq!(ok.credential.user, "no_such_role");
}

fn rejected_logins(w: &World) -> usize {
    w.pg.logins.borrow().iter().filter(|(_, ok)| !ok).count()
}

#[test]
fn a_wrong_role_under_load_mints_and_logs_in_a_bounded_number_of_times() {
    // 50 requests a second for 60 s, each in a new instance (the worst case: Spin's WASIp2,
    // wasmCloud, wasmtime serve): the hold lives in the store, read before any login.
    let w = wrong_role();
    for _ in 0..3000 {
        let e = block_on(w.instance().connect(&w.pg)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Database);
        assert_eq!(e.sqlstate(), Some("28P01"));
        assert!(e.message().contains("`no_such_role`"), "{e}");
        w.clock.advance(TimeDelta::milliseconds(20));
    }
    let (mints, rejected) = (w.ws.mints(), rejected_logins(&w));
    println!(
        "wrong role, 3,000 fresh instances in 60 s: {mints} mints, {rejected} rejected logins"
    );
    assert!(mints <= 10, "{mints} mints");
    assert!(rejected <= 20, "{rejected} rejected logins");
    // The role is created: once the hold ends, the next request (a fresh instance) succeeds.
    w.pg.reject_all.set(false);
    w.clock.advance(TimeDelta::minutes(5));
    let ok = block_on(w.instance().connect(&w.pg)).unwrap();
    assert_eq!(ok.credential.user, "no_such_role");
    // And what it logged in with is the record every instance uses from now on.
    let next = block_on(w.instance().connect(&w.pg)).unwrap();
    assert_eq!(next.source, CredentialSource::Kv);
    assert_eq!(next.credential.token, ok.credential.token);
}

#[test]
fn a_wrong_role_hit_by_concurrent_fresh_instances_costs_a_few_logins() {
    // 16 requests at once, each its own new instance on the same store, then 16 more.
    let w = wrong_role();
    let instances: Vec<Client> = (0..16).map(|_| w.instance()).collect();
    let results = run_like_spin(instances.iter().map(|i| task(i.connect(&w.pg))).collect());
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(e.message().contains("`no_such_role`"), "{e}");
    }
    let first = rejected_logins(&w);
    let instances: Vec<Client> = (0..16).map(|_| w.instance()).collect();
    let results = run_like_spin(instances.iter().map(|i| task(i.connect(&w.pg))).collect());
    assert!(results.iter().all(|r| r.is_err()));
    println!(
        "wrong role, 2 × 16 concurrent fresh instances: {} mints, {first} then {} rejected logins",
        w.ws.mints(),
        rejected_logins(&w)
    );
    assert_eq!(
        rejected_logins(&w),
        first,
        "the second burst logs in no more"
    );
    assert!(w.ws.mints() <= 4, "{} mints", w.ws.mints());
}

#[test]
fn a_rejection_hold_can_be_cleared() {
    let w = wrong_role();
    block_on(w.instance().connect(&w.pg)).unwrap_err();
    w.pg.reject_all.set(false);
    // Held: the next request does not even try…
    let logins = w.pg.logins.borrow().len();
    block_on(w.instance().connect(&w.pg)).unwrap_err();
    assert_eq!(w.pg.logins.borrow().len(), logins);
    // …until the hold is cleared (the operator created the role), in any instance.
    assert!(block_on(w.instance().clear_rejection()));
    assert!(
        !block_on(w.instance().clear_rejection()),
        "nothing held any more"
    );
    let ok = block_on(w.instance().connect(&w.pg)).unwrap();
    assert_eq!(ok.credential.user, "no_such_role");
}

/// How many back-off periods start in the first `span` seconds of an outage that begins at a
/// credential's reuse limit, `left` seconds before the end of its serving: the waits double
/// from 1 s to 60 s but never exceed half of what is left (at least 250 ms). One credential
/// call per period, across all instances, is the most an outage may cost.
fn backoff_periods(span: f64, left: f64) -> usize {
    let (mut t, mut delay, mut periods) = (0.0, 1.0_f64, 0);
    while t < span {
        periods += 1;
        t += delay.min((left - t) / 2.0).max(0.25);
        delay = (delay * 2.0).min(60.0);
    }
    periods
}

#[test]
fn fresh_instances_that_refresh_after_the_response_never_make_a_request_wait() {
    // Every request a new instance whose adapter refreshes after the response (a WASIp2
    // handler that answers, then goes on: Spin 3.4-4.0, wash, wasmtime serve). Rotations are
    // minted after responses; through an outage from 12:36 to 12:55:12 no request calls the
    // workspace, and after them at most one call per back-off period.
    let w = World::m2m();
    let fresh = || w.instance().with_refresh_after_every_response();
    let request = || {
        let lb = fresh();
        let before = w.clock.get();
        let c = block_on(lb.connect(&w.pg)).unwrap();
        let waited = (w.clock.get() - before).num_milliseconds();
        if lb.refresh_due() {
            block_on(lb.refresh());
        }
        (c, waited)
    };
    let (first, _) = request();
    assert_eq!(
        first.source,
        CredentialSource::Minted,
        "the cold start mints"
    );
    // A rotation: the instance after 12:40:30 mints after its response, the next takes it.
    advance_to(&w, "12:41:00");
    let (c, waited) = request();
    assert_eq!((&c.credential.token, waited), (&first.credential.token, 0));
    assert_eq!(w.ws.mints(), 2, "refreshed ahead, after the response");
    let (c, _) = request();
    assert_eq!(c.source, CredentialSource::Kv);
    assert_ne!(c.credential.token, first.credential.token);
    let held = c.credential;
    // An outage across this credential's reuse limit.
    w.clock
        .advance(held.minted_at + TimeDelta::seconds(36 * 60) - w.clock.get());
    workspace_down(&w, 100_000);
    let calls_before = w.ws.mints();
    let mut slowest = 0;
    let end = held.minted_at + TimeDelta::milliseconds(3_312_000);
    while w.clock.get() < end {
        let (c, waited) = request();
        assert_eq!(c.credential.token, held.token);
        slowest = slowest.max(waited);
        w.clock.advance(TimeDelta::milliseconds(200));
    }
    let calls = w.ws.mints() - calls_before;
    // At most one per period from the outage's start (36:00) to its end (55:12), served
    // until 58:00.
    let periods = backoff_periods(1_152.0, 1_320.0);
    println!(
        "outage over fresh instances refreshing after the response: {calls} credential calls in {periods} periods, slowest request {slowest} ms"
    );
    assert_eq!(slowest, 0, "no request waited for the workspace");
    assert!(calls <= periods, "{calls} calls in {periods} periods");
}

#[test]
fn an_outage_on_fresh_instances_serves_at_once_and_backs_off_across_them() {
    // Every request a new instance, 5 a second; the workspace answers 503 from 60 % of the
    // credential's life (12:36) to 92 % (12:55:12), across its reuse limit (12:45).
    let w = World::m2m();
    let first = block_on(w.instance().connect(&w.pg)).unwrap().credential;
    advance_to(&w, "12:36:00");
    workspace_down(&w, 100_000);
    let calls_before = w.ws.mints();
    let mut waits = vec![];
    while w.clock.get() < at("12:55:12") {
        let before = w.clock.get();
        let c = block_on(w.instance().connect(&w.pg)).unwrap();
        assert_eq!(c.credential.token, first.token);
        waits.push((w.clock.get() - before).num_milliseconds());
        w.clock.advance(TimeDelta::milliseconds(200));
    }
    let calls = w.ws.mints() - calls_before;
    waits.sort_unstable();
    let p95 = waits[waits.len() * 95 / 100];
    let slowest = *waits.last().unwrap();
    println!(
        "outage 12:36-12:55:12 over {} fresh instances: {calls} credential calls, p95 wait {p95} ms, slowest {slowest} ms",
        waits.len()
    );
    // No request waits more than the short attempt; the back-off (1, 2, 4, … 60 s, shared
    // through the store) allows one call per period from the reuse limit (12:45) on.
    let periods = backoff_periods(612.0, 780.0);
    assert!(slowest <= 1300, "slowest {slowest} ms");
    assert_eq!(p95, 0, "nearly every request is served at once");
    assert!(
        calls <= periods,
        "{calls} credential calls in {periods} back-off periods"
    );
    // The workspace is back: a fresh instance mints at the next try, and the others take it.
    w.ws.scripts_clear(AUTOSCALING_ROUTE);
    w.clock.advance(TimeDelta::seconds(61));
    let fresh = block_on(w.instance().connect(&w.pg)).unwrap();
    assert_eq!(fresh.source, CredentialSource::Minted);
    let next = block_on(w.instance().connect(&w.pg)).unwrap();
    assert_eq!(next.credential.token, fresh.credential.token);
    assert_eq!(next.source, CredentialSource::Kv);
}

#[test]
fn a_hung_workspace_past_the_reuse_limit_holds_no_request_long() {
    let w = World::m2m();
    let a = w.instance();
    let first = block_on(a.connect(&w.pg)).unwrap().credential;
    advance_to(&w, "12:45:01");
    for _ in 0..100 {
        w.ws.script(AUTOSCALING_ROUTE, Scripted::Hang);
    }
    for instance in [a, w.instance(), w.instance()] {
        let before = w.clock.get();
        let c = block_on(instance.connect(&w.pg)).unwrap();
        assert_eq!(c.credential.token, first.token);
        let waited = w.clock.get() - before;
        assert!(waited <= TimeDelta::milliseconds(1300), "waited {waited}");
    }
}

#[test]
fn connection_strings_ask_the_server_to_close_idle_sessions() {
    let w = World::m2m();
    let a = w.instance();
    let c = block_on(a.credential()).unwrap().credential;
    assert_eq!(c.idle_session_timeout(), Duration::from_secs(300));
    let s = a.connection_string(&c);
    assert!(
        s.expose()
            .ends_with("?sslmode=require&options=-c%20idle_session_timeout%3D300000"),
        "{s:?}"
    );
    for (value, tail) in [
        ("0", "?sslmode=require"),
        ("60", "&options=-c%20idle_session_timeout%3D60000"),
    ] {
        let w = World::with_vars(&[
            ("databricks_host", HOST),
            ("databricks_client_id", CLIENT_ID),
            ("databricks_client_secret", CLIENT_SECRET),
            ("lakebase_endpoint", ENDPOINT),
            ("lakebase_idle_session_timeout", value),
        ]);
        let a = w.instance();
        let c = block_on(a.credential()).unwrap().credential;
        assert!(a.connection_string(&c).expose().ends_with(tail), "{value}");
    }
    let e = Config::builder()
        .set("databricks_host", HOST)
        .set("databricks_token", PAT)
        .set("lakebase_endpoint", ENDPOINT)
        .set("lakebase_idle_session_timeout", "5m")
        .build()
        .unwrap_err();
    assert_eq!(e.variable(), Some("lakebase_idle_session_timeout"));
}

#[test]
fn strings_for_other_clients_say_verify_full_and_our_hosts_get_require() {
    for pgsslmode in [None, Some("require"), Some("verify-full")] {
        let mut vars = vec![
            ("databricks_host", HOST),
            ("databricks_client_id", CLIENT_ID),
            ("databricks_client_secret", CLIENT_SECRET),
            ("lakebase_endpoint", ENDPOINT),
            ("lakebase_idle_session_timeout", "0"),
        ];
        if let Some(mode) = pgsslmode {
            vars.push(("pgsslmode", mode));
        }
        let w = World::with_vars(&vars);
        let a = w.instance();
        let c = block_on(a.credential()).unwrap().credential;
        // Spin's spin:postgres and the WASI adapter parse with tokio-postgres, which refuses
        // `verify-full`, and verify in every TLS mode.
        let host = a.connection_string(&c);
        assert!(host.expose().ends_with("?sslmode=require"), "{pgsslmode:?}");
        // libpq, psycopg and pgx verify only with `verify-full`.
        let client = a.client_connection_string(&c);
        assert!(
            client.expose().ends_with("?sslmode=verify-full"),
            "{pgsslmode:?}"
        );
        assert_eq!(
            client.expose().replace("verify-full", "require"),
            host.expose(),
            "the same credential otherwise"
        );
    }
    // Local test servers keep their mode.
    let w = World::with_vars(&[
        ("databricks_host", HOST),
        ("databricks_client_id", CLIENT_ID),
        ("databricks_client_secret", CLIENT_SECRET),
        ("lakebase_endpoint", ENDPOINT),
        ("pghost", "127.0.0.1"),
        ("pgsslmode", "disable"),
    ]);
    let a = w.instance();
    let c = block_on(a.credential()).unwrap().credential;
    assert!(
        a.client_connection_string(&c)
            .expose()
            .contains("?sslmode=disable")
    );
}
