//! The standard-WASI plugin (`lakebase_wasi_plugin.wasm`) composed, as `wac plug` does, into a
//! component written against `wasmcloud:postgres@0.1.1-draft` (`tests/wasmcloud-consumer`), and
//! the composition served by `wasmtime serve` against the emulator and a real PostgreSQL behind
//! its TLS login proxy: values both ways, `query-batch`, prepared statements, the credentials
//! interface, one mint, 28P01 recovery, errors by kind, no secret anywhere.
//!
//! The wasmtime is `$WASMTIME`, else `wasmtime` on the PATH; without one the served scenarios
//! say so and pass (the world checks still run).

use std::collections::BTreeMap;
use std::path::PathBuf;

use lakebase_e2e::{
    Upstream, p3_credentials_consumer_wasm, temp_dir, wasi_plugin_wasm, wasmcloud_consumer_wasm,
    wasmtime_tier,
};
use lakebase_emulator::{CLIENT_TURNS, DEFAULT_CLIENT_ID, LOGINS_ACCEPTED};
use lakebase_testkit::host::HostProcess;
use serde_json::Value;

/// The wasmCloud-style consumer with the plugin plugged in, written to a temporary file.
fn composed() -> PathBuf {
    plugged(wasmcloud_consumer_wasm(), "wasmcloud-consumer")
}

/// `consumer` with the plugin plugged in (`wac plug --plug lakebase_wasi_plugin.wasm consumer`).
fn plugged(consumer: PathBuf, tag: &str) -> PathBuf {
    let consumer = std::fs::read(consumer).expect("the consumer .wasm");
    let plugin = std::fs::read(wasi_plugin_wasm()).expect("the plugin .wasm");
    let bytes = lakebase_devhost::compose::wac_plug(consumer, plugin).expect("wac plug");
    let path = temp_dir(&format!("wasi-plugin-{tag}")).join("composed.wasm");
    std::fs::write(&path, bytes).expect("writing the composition");
    path
}

fn assert_standard_wasi(imports: &[String]) {
    for i in imports {
        assert!(i.starts_with("wasi:"), "not standard WASI: {i}");
    }
}

#[test]
fn the_plugin_exports_credentials_and_wasmcloud_postgres_and_imports_only_standard_wasi() {
    let (imports, exports) = lakebase_devhost::component_world(&wasi_plugin_wasm()).unwrap();
    println!("imports: {imports:?}\nexports: {exports:?}");
    for needed in [
        "lakebase:postgres/credentials@0.1.0",
        "wasmcloud:postgres/types@0.1.1-draft",
        "wasmcloud:postgres/query@0.1.1-draft",
        "wasmcloud:postgres/prepared@0.1.1-draft",
    ] {
        assert!(exports.iter().any(|e| e == needed), "{needed}: {exports:?}");
    }
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
    assert_standard_wasi(&imports);

    // Plugged into a wasmCloud component, nothing of wasmcloud:postgres is left to the host.
    let (imports, exports) = lakebase_devhost::component_world(&composed()).unwrap();
    println!("composed imports: {imports:?}");
    assert_standard_wasi(&imports);
    assert!(
        exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler@0.2")),
        "{exports:?}"
    );
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasmcloud_postgres_component_runs_on_lakebase_through_the_plugin() {
    let Some(kind) = wasmtime_tier("the WASI plugin") else {
        return;
    };
    let (up, config) = Upstream::start_wasi().await;
    let host = HostProcess::wasmtime_serve(
        &kind,
        &composed(),
        &config,
        &[
            "--max-instance-reuse-count",
            "128",
            "--idle-instance-timeout",
            "30s",
        ],
        &temp_dir("wasi-plugin-serve"),
    )
    .expect("starting wasmtime serve");
    let mut responses = String::new();
    let mut get = |path: &str| {
        let (status, text) = host.request("GET", path, "").expect("request");
        responses.push_str(&text);
        lakebase_e2e::let_wasmtime_pool_the_instance();
        (status, text)
    };

    let (status, text) = get("/whoami");
    assert_eq!(status, 200, "{text}\n{}", host.logs());
    let who = json(&text);
    assert_eq!(who["user"], format!("PgValue::Text({DEFAULT_CLIENT_ID:?})"));
    assert_eq!(who["n"], "PgValue::Int4(42)");

    // One round trip per call: each call's statement goes out with the session's reset right
    // behind it, and the next call takes the connection without a check of its own. (Sent
    // one after the other, reset then statement, it is two round trips: 20 here.)
    let (status, text) = get("/repeat");
    assert_eq!(
        (status, json(&text)["sum"].clone()),
        (200, 55.into()),
        "{text}"
    );
    let before = up.emu.count(CLIENT_TURNS);
    let (status, text) = get("/repeat");
    assert_eq!(status, 200, "{text}");
    let turns = up.emu.count(CLIENT_TURNS) - before;
    assert!(
        (10..=12).contains(&turns),
        "ten calls on a warm connection made {turns} round trips, not 10: {:?}",
        up.emu.counts()
    );

    // Values both ways, in the cases wasmCloud's own host plugin returns.
    let (status, text) = get("/types");
    assert_eq!(status, 200, "{text}");
    let row = json(&text);
    let expect = [
        ("i8", "Int8(-9007199254740993)"),
        ("t", r#"Text("naïve \"quoted\"")"#),
        ("b", "Bool(true)"),
        ("f8", "Float8((7205759403792794, -56, 1))"),
        ("by", "Bytea([0, 1, 254, 255])"),
        ("d", "Date(Date::Ymd((2026, 12, 2)))"),
        // 10:36:22.123456+01:00 is 09:36:22.123456 UTC.
        (
            "tz",
            "TimestampTz(TimestampTz { timestamp: Timestamp { date: Date::Ymd((2026, 12, 2)), time: Time { hour: 9, min: 36, sec: 22, micro: 123456 } }, offset: Offset::WesternHemisphereSecs(0) })",
        ),
        ("u", r#"Uuid("6f1c2a5e-0b4d-4c8e-9f3a-2d7e8b9c0a1f")"#),
        ("j", r#"Jsonb("{\"a\": null, \"b\": [1, 2]}")"#),
        ("a", "Int4Array([1, -2, 3])"),
        ("n", r#"Numeric("-12345.678900")"#),
        ("ta", r#"TextArray(["a,b", "c\\d"])"#),
        ("nul", "Null"),
        ("v", "Varchar((None, [120]))"),
        ("f4", "Float4((10485760, -22, 1))"),
        ("tm", "Time(Time { hour: 10, min: 36, sec: 22, micro: 0 })"),
        ("inf", "Date(Date::PositiveInfinity)"),
    ];
    for (column, value) in expect {
        assert_eq!(
            row[column],
            format!("PgValue::{value}"),
            "column {column}: {text}"
        );
    }

    // query-batch, then prepared statements: one token per statement text, rows affected.
    let (status, text) = get("/batch");
    assert_eq!(status, 200, "{text}");
    let (status, text) = get("/prepared");
    assert_eq!(status, 200, "{text}");
    let prepared = json(&text);
    assert_eq!(prepared["affected"], 2, "{text}");
    assert_eq!(prepared["same_token"], true, "{text}");
    assert_eq!(
        prepared["unknown"],
        "Err(PreparedStatementExecError::UnknownPreparedQuery)"
    );
    assert_eq!(prepared["count"], "PgValue::Int8(3)", "{text}");
    // Prepared once on the connection, kept for the next call with the same text.
    assert_eq!(prepared["server_statements"], "PgValue::Int8(1)", "{text}");
    // A kept statement whose table changed shape is prepared again, not failed.
    let (status, text) = get("/replanned");
    assert_eq!(
        (status, json(&text)),
        (200, serde_json::json!({ "before": 1, "after": 2 })),
        "{text}"
    );

    // Query errors keep wasmCloud's cases.
    let (status, text) = get("/bad-sql");
    assert_eq!(status, 502);
    let e = json(&text);
    assert_eq!(e["error"], "invalid-query", "{text}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("query failed: 42601: "),
        "{text}"
    );
    let (status, text) = get("/bad-param");
    assert_eq!(
        (status, json(&text)["error"].clone()),
        (502, "invalid-query".into())
    );
    assert!(text.contains("22P02"), "{text}");
    let (status, text) = get("/unsupported-param");
    assert_eq!(status, 502);
    let e = json(&text);
    assert_eq!(e["error"], "invalid-params", "{text}");
    assert!(
        e["message"].as_str().unwrap().contains("`circle`"),
        "{text}"
    );

    assert_eq!(
        up.emu.mints(),
        1,
        "one mint for all of it: {:?}\n{}",
        up.emu.counts(),
        host.logs()
    );
    assert_eq!(
        up.emu.count("PG login accepted"),
        1,
        "the instance keeps its connection: {:?}",
        up.emu.counts()
    );

    // Every token revoked and its session cut: the next query logs in anew, is refused with
    // 28P01, and the plugin mints once more and succeeds.
    up.revoke_all_and_wait_for_the_cut();
    let (status, text) = get("/whoami");
    assert_eq!(status, 200, "{text}\n{}", host.logs());
    assert_eq!(up.emu.mints(), 2);

    // Prepared statements on the new connection: the instance's tokens hold statement text,
    // prepared again on the connection of each call (never run on the one they came from).
    let (status, text) = get("/prepared");
    assert_eq!(status, 200, "{text}\n{}", host.logs());
    let prepared = json(&text);
    assert_eq!(prepared["affected"], 2, "{text}");
    assert_eq!(prepared["same_token"], true, "{text}");
    assert_eq!(prepared["count"], "PgValue::Int8(5)", "{text}");
    assert_eq!(prepared["server_statements"], "PgValue::Int8(1)", "{text}");
    assert_eq!(up.emu.count(LOGINS_ACCEPTED), 2, "{:?}", up.emu.counts());

    let logs = host.logs();
    up.assert_no_secret(&responses, &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_name_the_kind_and_what_to_fix() {
    let Some(kind) = wasmtime_tier("the WASI plugin") else {
        return;
    };
    let (_up, config) = Upstream::start_wasi().await;
    let wasm = composed();
    let cases: [(&str, Option<&str>, &str); 2] = [
        (
            "databricks_client_secret",
            Some("not-the-secret-0123456789"),
            "lakebase workspace_auth: ",
        ),
        ("lakebase_endpoint", None, "lakebase configuration: "),
    ];
    for (name, value, prefix) in cases {
        let mut edited = config.clone();
        match value {
            Some(v) => edited.insert(name.to_owned(), v.to_owned()),
            None => edited.remove(name),
        };
        let host = HostProcess::wasmtime_serve(
            &kind,
            &wasm,
            &edited,
            &[],
            &temp_dir(&format!("wasi-plugin-{name}")),
        )
        .expect("starting wasmtime serve");
        let (status, text) = host.request("GET", "/whoami", "").unwrap();
        let e = serde_json::from_str::<Value>(&text).unwrap_or_default();
        assert_eq!(
            (status, e["error"].clone()),
            (502, "unexpected".into()),
            "{name}: {text}\n{}",
            host.logs()
        );
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(prefix), "{name}: {text}");
        assert!(message.contains(name), "{name}: {text}");
        if let Some(v) = value {
            assert!(
                !text.contains(v) && !host.logs().contains(v),
                "{name}: echoed"
            );
        }
    }
}

/// The credentials interface, called by an async `wasi:http@0.3` handler (its functions are
/// `async`: only an async task may wait on them): minted once, then from the plugin instance's
/// memory, dropped by `invalidate`, minted again; a refused secret reported with its kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_component_reads_the_credentials_through_the_plugin() {
    let Some(kind) = wasmtime_tier("the WASI plugin") else {
        return;
    };
    let (up, config) = Upstream::start_wasi().await;
    let wasm = plugged(p3_credentials_consumer_wasm(), "p3-consumer");
    let (imports, _) = lakebase_devhost::component_world(&wasm).unwrap();
    assert_standard_wasi(&imports);
    let serve = |config: &BTreeMap<String, String>, tag: &str| {
        HostProcess::wasmtime_serve(
            &kind,
            &wasm,
            config,
            &[
                "-S",
                "p3",
                "--max-instance-reuse-count",
                "128",
                "--idle-instance-timeout",
                "30s",
            ],
            &temp_dir(tag),
        )
        .expect("starting wasmtime serve")
    };
    let host = serve(&config, "wasi-plugin-p3");
    let mut responses = String::new();
    let mut get = |path: &str| {
        let (status, text) = host.request("GET", path, "").expect("request");
        responses.push_str(&text);
        assert_eq!(status, 200, "{path}: {text}\n{}", host.logs());
        json(&text)
    };
    let first = get("/credential");
    assert_eq!(first["source"], "minted", "{first}");
    assert_eq!(first["user"], DEFAULT_CLIENT_ID);
    assert_eq!(first["host"], "localhost");
    assert!(first["expires_in_s"].as_i64().unwrap() > 3000, "{first}");
    // For a client that speaks Postgres itself: libpq, psycopg and pgx verify only then.
    assert_eq!(first["sslmode"], "verify-full", "{first}");
    assert_eq!(get("/credential")["source"], "memory");
    assert_eq!(get("/invalidate")["dropped"], true);
    assert_eq!(get("/credential")["source"], "minted");
    assert_eq!(up.emu.mints(), 2);
    let logs = host.logs();
    up.assert_no_secret(&responses, &logs);

    let wrong = "not-the-secret-0123456789";
    let mut edited = config.clone();
    edited.insert("databricks_client_secret".to_owned(), wrong.to_owned());
    let host = serve(&edited, "wasi-plugin-p3-secret");
    let (status, text) = host.request("GET", "/credential", "").unwrap();
    assert_eq!(status, 502, "{text}\n{}", host.logs());
    let e = json(&text);
    assert_eq!(e["error"]["kind"], "ErrorKind::WorkspaceAuth", "{text}");
    assert!(
        !text.contains(wrong) && !host.logs().contains(wrong),
        "echoed"
    );
}

/// The connection string the WASI plugin hands out is one libpq verifies: `psql` with it is
/// refused by a server whose certificate its root file does not vouch for, and logs in when the
/// file holds the right CA. (The `sslmode=require` string handed out before logged in either
/// way: libpq then checks nothing without a root file.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libpq_refuses_the_handed_out_string_on_an_untrusted_certificate() {
    let Some(kind) = wasmtime_tier("the WASI plugin") else {
        return;
    };
    let (up, config) = Upstream::start_wasi().await;
    let wasm = plugged(p3_credentials_consumer_wasm(), "p3-consumer-libpq");
    let host = HostProcess::wasmtime_serve(
        &kind,
        &wasm,
        &config,
        &["-S", "p3"],
        &temp_dir("wasi-plugin-libpq"),
    )
    .expect("starting wasmtime serve");
    let (status, text) = host.request("GET", "/connection-string", "").unwrap();
    assert_eq!(status, 200, "{text}\n{}", host.logs());
    let string = json(&text)["connection_string"]
        .as_str()
        .expect("a connection string")
        .to_owned();
    assert!(string.contains("sslmode=verify-full"), "not verify-full");

    let dir = temp_dir("libpq-roots");
    let right = dir.join("right-ca.pem");
    std::fs::write(&right, up.emu.ca_pem().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let wrong = dir.join("other-ca.pem");
    std::fs::write(&wrong, params.self_signed(&key).unwrap().pem()).unwrap();
    let psql = lakebase_testkit::postgres_bin_dir().unwrap().join("psql");
    let run = |conninfo: &str, roots: &std::path::Path| {
        let out = std::process::Command::new(&psql)
            .args([conninfo, "-Atc", "SELECT current_user"])
            .env("PGSSLROOTCERT", roots)
            // No ~/.postgresql/root.crt of the machine's user.
            .env("HOME", &dir)
            .output()
            .expect("running psql");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, stderr) = run(&string, &wrong);
    assert!(
        !ok,
        "psql logged in past a certificate its roots do not vouch for"
    );
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
    let (ok, user, stderr) = run(&string, &right);
    assert!(ok, "psql with the right CA: {stderr}");
    assert_eq!(user, DEFAULT_CLIENT_ID);
    // What `sslmode=require` gave: no root file, no check, logged in.
    let require = string.replace("sslmode=verify-full", "sslmode=require");
    let (ok, _, stderr) = run(&require, &dir.join("no-such-file.pem"));
    assert!(ok, "sslmode=require without a root file: {stderr}");
}
