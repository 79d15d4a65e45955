//! The standard-WASI build (`examples/notes-wasi` on `crates/wasi`) on `wasmtime serve`:
//! wasmtime's own implementations of `wasi:http`, `wasi:config`, `wasi:keyvalue` and
//! `wasi:sockets`, against the emulator and a real PostgreSQL behind its TLS login proxy, with
//! Postgres spoken by the component itself (TLS verified against `lakebase_ca_root`).
//!
//! The wasmtime is `$WASMTIME`, else `wasmtime` on the PATH (`.ci/run` passes the workplace's);
//! without one these scenarios say so and pass (the world check still runs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lakebase_e2e::{CREDENTIAL_ROUTE, Upstream, notes_wasi_wasm, temp_dir, wasmtime_tier};
use lakebase_emulator::{CLIENT_TURNS, DEFAULT_CLIENT_ID, Fault, FaultKind, LOGINS_ACCEPTED};
use lakebase_testkit::host::{HostKind, HostProcess};
use serde_json::{Value, json};

/// `wasmtime serve` options that let one instance serve a test's sequential requests (WASI 0.2
/// components get a fresh instance per request otherwise); an idle instance is kept 30 s.
const REUSE: &[&str] = &[
    "--max-instance-reuse-count",
    "128",
    "--idle-instance-timeout",
    "30s",
];

fn serve(
    kind: &HostKind,
    config: &BTreeMap<String, String>,
    args: &[&str],
    tag: &str,
) -> HostProcess {
    HostProcess::wasmtime_serve(kind, &notes_wasi_wasm(), config, args, &temp_dir(tag))
        .expect("starting wasmtime serve")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

#[test]
fn the_wasi_app_world_imports_only_standard_wasi() {
    let (imports, exports) = lakebase_devhost::component_world(&notes_wasi_wasm()).unwrap();
    println!("imports: {imports:?}\nexports: {exports:?}");
    assert!(
        exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler@0.2")),
        "{exports:?}"
    );
    for needed in [
        "wasi:config/store@0.2.0-rc.1",
        "wasi:keyvalue/store@0.2.0-draft",
        "wasi:sockets/tcp@0.2",
        "wasi:http/outgoing-handler@0.2",
    ] {
        assert!(
            imports.iter().any(|i| i.starts_with(needed)),
            "missing {needed}: {imports:?}"
        );
    }
    for i in &imports {
        assert!(i.starts_with("wasi:"), "not standard WASI: {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_on_wasmtime_serve_mint_once_recover_and_keep_secrets() {
    let Some(kind) = wasmtime_tier("the standard-WASI app") else {
        return;
    };
    let (up, config) = Upstream::start_wasi().await;
    // WASI 0.2 components get a fresh instance per request unless reuse is allowed; with it,
    // the credential in instance memory serves the next requests. An idle instance is kept
    // 30 s (wasmtime's default is shorter than a pause of this loaded machine).
    let host = serve(
        &kind,
        &config,
        &[
            "--max-instance-reuse-count",
            "128",
            "--idle-instance-timeout",
            "30s",
        ],
        "wasi-notes",
    );
    let mut responses = String::new();
    let mut call = |method: &str, path: &str, body: &str| {
        let (status, text) = host.request(method, path, body).expect("request");
        responses.push_str(&text);
        lakebase_e2e::let_wasmtime_pool_the_instance();
        (status, text)
    };

    let (status, text) = call("GET", "/health", "");
    assert_eq!(status, 200, "{text}\n{}", host.logs());
    let health = json(&text);
    assert_eq!(health["credential"]["source"], "minted");
    assert_eq!(health["database"]["user"], DEFAULT_CLIENT_ID);
    assert_eq!(health["database"]["host"], "localhost");
    let (status, text) = call("GET", "/health", "");
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        json(&text)["credential"]["source"],
        "memory",
        "the instance's connection and credential"
    );
    // One round trip a warm request: the statement parsed, bound and run in one flight with
    // the session's reset right behind it (`last_use`), so the next request needs no check of
    // its own. (A reset at the start of a request, then a prepared query: three, 15 here.)
    let before = up.emu.count(CLIENT_TURNS);
    for _ in 0..5 {
        let (status, text) = call("GET", "/health", "");
        assert_eq!(status, 200, "{text}");
    }
    let turns = up.emu.count(CLIENT_TURNS) - before;
    assert!(
        (5..=6).contains(&turns),
        "five warm requests made {turns} round trips, not 5: {:?}",
        up.emu.counts()
    );

    // The notes API answers as on Spin (the same core).
    let (status, text) = call("POST", "/notes", r#"{"text":"from wasmtime"}"#);
    assert_eq!(status, 201, "{text}");
    let id = json(&text)["id"].as_i64().expect("an id");
    let (status, text) = call("GET", &format!("/notes/{id}"), "");
    assert_eq!(
        (status, json(&text)["text"].clone()),
        (200, "from wasmtime".into())
    );
    let (status, text) = call("GET", "/notes?limit=5", "");
    assert_eq!(status, 200);
    assert!(
        json(&text)["notes"]
            .as_array()
            .is_some_and(|n| !n.is_empty())
    );
    assert_eq!(call("DELETE", &format!("/notes/{id}"), "").0, 204);
    let (status, text) = call("GET", &format!("/notes/{id}"), "");
    assert_eq!(
        (status, json(&text)["error"]["kind"].clone()),
        (404, "not_found".into())
    );
    let (status, text) = call("POST", "/notes", "{\"text\":\"a\\u0000b\"}");
    assert_eq!(status, 400, "{text}");
    let big = format!("{{\"text\":\"{}\"}}", "a".repeat(70_000));
    assert_eq!(call("POST", "/notes", &big).0, 413);
    assert_eq!(call("GET", "/nope", "").0, 404);
    assert_eq!(up.emu.mints(), 1, "one mint for all of it");

    // The instance kept its connection open: one login for all of it.
    assert_eq!(
        up.emu.count("PG login accepted"),
        1,
        "{:?}",
        up.emu.counts()
    );

    // Every token revoked, and the emulator's proxy ends their sessions (a server that ended
    // them): the kept connection no longer answers, the next login with the credential in
    // memory is rejected with 28P01, and the component drops it, mints once more and logs in.
    up.revoke_all_and_wait_for_the_cut();
    let (status, text) = call("GET", "/health", "");
    assert_eq!(status, 200, "{text}\n{}", host.logs());
    assert_eq!(json(&text)["credential"]["source"], "minted");
    assert_eq!(up.emu.mints(), 2);
    assert!(host.logs().contains("minting a new one"), "{}", host.logs());

    // Many requests at once: wasmtime serves WASI 0.2 instances one request at a time and
    // starts more instances; each new instance mints (wasmtime's key-value store keeps nothing
    // between bucket handles), none fails.
    let host = Arc::new(host);
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let host = host.clone();
            std::thread::spawn(move || {
                (0..4)
                    .map(|_| host.request("GET", "/health", "").expect("request"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut concurrent = 0;
    for t in threads {
        for (status, text) in t.join().unwrap() {
            assert_eq!(status, 200, "{text}");
            responses.push_str(&text);
            concurrent += 1;
        }
    }
    assert_eq!(concurrent, 64);
    println!("64 concurrent requests: {} mints in all", up.emu.mints());

    let logs = host.logs();
    assert!(logs.contains("minted database credential"), "{logs}");
    up.assert_no_secret(&responses, &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_on_wasmtime_serve_say_who_must_act() {
    let Some(kind) = wasmtime_tier("the standard-WASI app") else {
        return;
    };
    let (_up, config) = Upstream::start_wasi().await;
    // A CA that did not sign the proxy's certificate.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = params.self_signed(&key).unwrap().pem();
    let cases: [(&str, Option<&str>, u16, &str); 4] = [
        // A wrong secret: the workspace refuses it.
        (
            "databricks_client_secret",
            Some("not-the-secret-0123456789"),
            502,
            "workspace_auth",
        ),
        // A missing variable is named.
        ("lakebase_endpoint", None, 500, "configuration"),
        // No CA for the proxy's certificate: TLS is verified in the guest.
        ("lakebase_ca_root", None, 500, "configuration"),
        // Another CA: the error says what rustls found and that the CA set is the one refused.
        ("lakebase_ca_root", Some(&other_ca), 500, "configuration"),
    ];
    for (name, value, status, kind_name) in cases {
        let mut edited = config.clone();
        match value {
            Some(v) => edited.insert(name.to_owned(), v.to_owned()),
            None => edited.remove(name),
        };
        let host = serve(&kind, &edited, &[], &format!("wasi-{name}"));
        let (got, text) = host.request("GET", "/health", "").unwrap();
        let e = json(&text);
        assert_eq!(
            (got, e["error"]["kind"].clone()),
            (status, kind_name.into()),
            "{name}: {text}"
        );
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(name), "{name}: {text}");
        if name == "lakebase_ca_root" {
            let (said, found) = match value {
                Some(_) => (
                    "was refused with the CA of `lakebase_ca_root`",
                    "UnknownIssuer",
                ),
                None => ("set `lakebase_ca_root`", "UnknownIssuer"),
            };
            assert!(
                message.contains(said) && message.contains(found),
                "{name}: {text}"
            );
        }
        if let Some(v) = value.filter(|_| name != "lakebase_ca_root") {
            assert!(
                !text.contains(v) && !host.logs().contains(v),
                "{name}: echoed"
            );
        }
    }
}

/// The core's deadlines hold on WASI: a workspace that accepts and never answers, and one that
/// answers its headers at once and then a byte every 2 s (which no per-read timeout of the host
/// stops), give 503 `unavailable` within the credential load's 25 s, not after the hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_trickling_workspace_is_cut_by_the_deadlines_on_wasmtime_serve() {
    let Some(kind) = wasmtime_tier("the standard-WASI app") else {
        return;
    };
    let (up, config) = Upstream::start_wasi().await;
    for (what, fault) in [
        (
            "never answers",
            FaultKind::Latency(Duration::from_secs(600)),
        ),
        (
            "trickles a byte every 2 s",
            FaultKind::Trickle(Duration::from_secs(2)),
        ),
    ] {
        up.emu.clear_faults();
        up.emu.fault(Fault {
            route: String::new(),
            count: u32::MAX,
            kind: fault,
        });
        let host = serve(&kind, &config, &[], "wasi-hung-workspace");
        let started = Instant::now();
        let (status, text) = host.request("GET", "/health", "").expect("request");
        let took = started.elapsed();
        println!("a workspace that {what}: {status} after {took:.1?}: {text}");
        assert_eq!(
            (status, json(&text)["error"]["kind"].clone()),
            (503, "unavailable".into()),
            "{what}: {text}\n{}",
            host.logs()
        );
        // 25 s is the load's deadline; the margin is for a loaded machine, far below the hang.
        assert!(
            took < Duration::from_secs(60),
            "a workspace that {what}: answered after {took:?}"
        );
        up.assert_no_secret(&text, &host.logs());
    }
    assert_eq!(up.emu.mints(), 0);
}

/// The sessions the role has open on the real server (the login proxy relays one per login).
fn server_sessions(up: &Upstream) -> String {
    up.pg
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{DEFAULT_CLIENT_ID}'"),
        )
        .expect("psql")
}

/// Waits (up to 5 s) until the role has `n` sessions on the server: a closed connection's
/// backend ends on its own time.
fn wait_for_server_sessions(up: &Upstream, n: usize) {
    for _ in 0..100 {
        if server_sessions(up) == n.to_string() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the role has {} sessions, not {n}", server_sessions(up));
}

/// One request's session state (a transaction left open, or failed, `SET`s, temporary tables,
/// cursors, advisory locks, `LISTEN`) does not reach the next request on the same instance and
/// connection: the kept connection is reset when a new request takes it. Seen through the
/// app's session probe (`notes_test_routes`, a test aid), on the same server session (its pid)
/// and with one login for all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_leaves_no_session_state_to_the_next_on_wasmtime_serve() {
    let Some(kind) = wasmtime_tier("the standard-WASI app") else {
        return;
    };
    let (up, mut config) = Upstream::start_wasi().await;
    config.insert("notes_test_routes".to_owned(), "true".to_owned());
    let host = serve(&kind, &config, REUSE, "wasi-session-reset");
    let call = |method: &str, path: &str, body: &str| {
        let (status, text) = host.request(method, path, body).expect("request");
        lakebase_e2e::let_wasmtime_pool_the_instance();
        (status, text)
    };

    let (status, text) = call("GET", "/_test/session", "");
    assert_eq!(status, 200, "{text}\n{}", host.logs());
    let clean = json(&text);
    assert_eq!(clean["in_transaction"], "f", "{clean}");
    assert_eq!(clean["temp_relations"], "0", "{clean}");
    let pid = clean["pid"].clone();

    for round in 0..2 {
        // The session left dirty; a second round would fail on `CREATE TEMP TABLE` if the
        // first round's temporary table had survived.
        let (status, text) = call("POST", "/_test/session/dirty", "");
        assert_eq!(status, 200, "round {round}: {text}\n{}", host.logs());
        let dirty = json(&text);
        assert_eq!(
            dirty["pid"], pid,
            "the same instance and connection: {dirty}"
        );
        for (name, value) in [
            ("in_transaction", "t"),
            ("statement_timeout", "4321ms"),
            ("search_path", "pg_catalog, public"),
            ("work_mem", "7MB"),
            ("temp_relations", "2"),
            ("cursors", "2"),
            ("advisory_locks", "2"),
            ("listening", "1"),
        ] {
            assert_eq!(dirty[name], value, "{name}: {dirty}");
        }
        let (status, text) = call("GET", "/_test/session", "");
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            json(&text),
            clean,
            "round {round}: the next request starts clean"
        );
    }

    // A failed transaction (every statement but its end refused) does not fail the next request.
    let (status, text) = call("POST", "/_test/session/failed", "");
    assert_eq!(
        (status, json(&text)),
        (200, json!({ "failed": true, "then": "25P02" })),
        "{text}"
    );
    let (status, text) = call("GET", "/_test/session", "");
    assert_eq!((status, json(&text)), (200, clean.clone()), "{text}");

    // The app's own routes after a dirty request: its table in `public` is found again.
    assert_eq!(call("POST", "/_test/session/dirty", "").0, 200);
    let (status, text) = call("POST", "/notes", r#"{"text":"after a dirty session"}"#);
    assert_eq!(status, 201, "{text}");
    let (status, text) = call("GET", "/health", "");
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text)["credential"]["source"], "memory");

    assert_eq!(up.emu.mints(), 1, "{:?}", up.emu.counts());
    assert_eq!(
        up.emu.count(LOGINS_ACCEPTED),
        1,
        "one kept connection for all of it: {:?}",
        up.emu.counts()
    );
    assert_eq!(server_sessions(&up), "1");
    // The reset is silent in the server's log on a clean session: it warns only of the
    // transactions that requests left open.
    let log = up.pg.log();
    assert!(
        !log.contains("there is no transaction in progress"),
        "{log}"
    );
    assert!(
        log.contains("there is already a transaction in progress"),
        "{log}"
    );
}

/// A kept connection serves new requests only while the credential it logged in with is the one
/// to use: fresh, or past its reuse limit while a refresh of it fails (the library serves it
/// through an outage). Once a newer credential is had, the next request logs in anew with it and
/// the old session is closed (a rotated credential, or a revoked principal, takes effect by then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_follows_its_credential_on_wasmtime_serve() {
    let Some(kind) = wasmtime_tier("the standard-WASI app") else {
        return;
    };
    let (up, mut config) = Upstream::start_wasi().await;
    // The server closes no idle session here: the kept one ends only when the component ends it.
    config.insert("lakebase_idle_session_timeout".to_owned(), "0".to_owned());
    // A 60-second token is reused for 45 s and served through a failing refresh until 58 s.
    up.emu.set_db_token_ttl(Duration::from_secs(60));
    let host = serve(
        &kind,
        &config,
        &[
            "--max-instance-reuse-count",
            "128",
            "--idle-instance-timeout",
            "120s",
        ],
        "wasi-stale",
    );
    let call = |path: &str| {
        let (status, text) = host.request("GET", path, "").expect("request");
        lakebase_e2e::let_wasmtime_pool_the_instance();
        assert_eq!(status, 200, "{text}\n{}", host.logs());
        json(&text)
    };
    let logins = || up.emu.count(LOGINS_ACCEPTED);

    let started = Instant::now();
    let first = call("/health");
    assert_eq!(first["credential"]["source"], "minted", "{first}");
    let reuse = first["credential"]["reused_until_s"]
        .as_u64()
        .expect("reuse");
    assert!((40..=45).contains(&reuse), "{first}");
    assert_eq!(call("/health")["credential"]["source"], "memory");
    assert_eq!(logins(), 1, "{:?}", up.emu.counts());

    // Past the reuse limit, the workspace fails the refresh (and asks for a retry in 5 s, past
    // the 1 s a request with a credential in hand waits): the kept connection serves on with
    // its credential (the token is still valid), no new login.
    std::thread::sleep(Duration::from_secs(reuse + 2).saturating_sub(started.elapsed()));
    up.emu.fault(Fault {
        route: CREDENTIAL_ROUTE.to_owned(),
        count: 1,
        kind: FaultKind::Status {
            status: 503,
            error_code: "TEMPORARILY_UNAVAILABLE".to_owned(),
            message: "down for a moment".to_owned(),
            retry_after: Some(5),
        },
    });
    let during = call("/health");
    assert_eq!(during["credential"]["source"], "memory", "{during}");
    assert_eq!(logins(), 1, "{:?}\n{}", up.emu.counts(), host.logs());
    // The refresh ran after the response (`serve_then_refresh`): its failure is logged then.
    let logged = |what: &str| {
        (0..100).any(|_| {
            let found = host.logs().contains(what);
            if !found {
                std::thread::sleep(Duration::from_millis(50));
            }
            found
        })
    };
    assert!(logged("serving credential"), "{}", host.logs());

    // After the back-off a request is served at once and the refresh after it mints; the next
    // request logs in with the new credential and the old session is closed (the role has the
    // new one only).
    std::thread::sleep(Duration::from_millis(1500));
    let after = call("/health");
    assert_eq!(after["credential"]["source"], "memory", "{after}");
    let minted_twice = (0..100).any(|_| {
        let n = host.logs().matches("minted database credential").count();
        if n < 2 {
            std::thread::sleep(Duration::from_millis(50));
        }
        n >= 2
    });
    assert!(
        minted_twice,
        "refreshed after the response:\n{}",
        host.logs()
    );
    call("/health");
    assert_eq!(logins(), 2, "{:?}", up.emu.counts());
    wait_for_server_sessions(&up, 1);

    // The new connection is kept in turn.
    assert_eq!(call("/health")["credential"]["source"], "memory");
    assert_eq!(logins(), 2, "{:?}", up.emu.counts());
    up.assert_no_secret("", &host.logs());
}

/// A measurement, not a check: the latency of warm requests (one instance, its connection
/// kept) on `wasmtime serve`, each on a fresh HTTP connection, timed one after the other.
/// `NOTES_WASI_WASM` measures another build of the app (e.g. the one before a change),
/// `WARM_REQUESTS` sets how many per route (300).
/// `WASMTIME=… cargo test -p lakebase-e2e --test wasi warm_request -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it alone with --ignored --nocapture"]
async fn warm_request_latency_on_wasmtime_serve() {
    let Some(kind) = wasmtime_tier("the latency measurement") else {
        return;
    };
    let wasm = std::env::var_os("NOTES_WASI_WASM").map_or_else(notes_wasi_wasm, PathBuf::from);
    let n: usize = std::env::var("WARM_REQUESTS").map_or(300, |v| v.parse().expect("a count"));
    let (up, config) = Upstream::start_wasi().await;
    let host = HostProcess::wasmtime_serve(&kind, &wasm, &config, REUSE, &temp_dir("wasi-warm"))
        .expect("starting wasmtime serve");
    let (status, text) = host
        .request("POST", "/notes", r#"{"text":"warm"}"#)
        .expect("request");
    assert_eq!(status, 201, "{text}\n{}", host.logs());
    let id = json(&text)["id"].as_i64().expect("an id");
    lakebase_e2e::let_wasmtime_pool_the_instance();
    println!(
        "{} ({n} sequential warm requests per route)",
        wasm.display()
    );
    for path in ["/health".to_owned(), format!("/notes/{id}")] {
        let mut times: Vec<Duration> = (0..n)
            .map(|_| {
                let start = Instant::now();
                let (status, text) = host.request("GET", &path, "").expect("request");
                let took = start.elapsed();
                assert_eq!(status, 200, "{text}");
                lakebase_e2e::let_wasmtime_pool_the_instance();
                took
            })
            .collect();
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "GET {path}: median {:.2} ms, p10 {:.2} ms, p90 {:.2} ms, mean {:.2} ms",
            ms(times[n / 2]),
            ms(times[n / 10]),
            ms(times[n * 9 / 10]),
            ms(times.iter().sum::<Duration>() / n as u32),
        );
    }
    // wasmtime starts another instance when a request comes before the last one was pooled
    // (then that request was cold: a mint and a login, in the slowest tenth).
    println!(
        "logins: {}, mints: {} (1 each when every measured request was warm)",
        up.emu.count(LOGINS_ACCEPTED),
        up.emu.mints()
    );
}
