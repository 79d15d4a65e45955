//! End to end: the release `.wasm` of the app on the devhost, a real PostgreSQL behind the
//! emulated workspace's login proxy. Each test starts its own stack.

use std::time::Duration;

use lakebase_e2e::*;
use lakebase_emulator::{Fault, FaultKind};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_request_mints_once_and_100_more_reuse_it() {
    let s = Stack::start().await;
    let (status, health) = s.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["credential"]["source"], "minted");
    assert_eq!(
        health["database"]["user"],
        lakebase_emulator::DEFAULT_CLIENT_ID
    );
    assert!(
        health["database"]["server_version"]
            .as_str()
            .unwrap()
            .starts_with(|c: char| c.is_ascii_digit())
    );
    let expires = health["credential"]["expires_in_s"].as_i64().unwrap();
    assert!((3590..=3600).contains(&expires), "{expires}");
    assert_eq!(s.mints(), 1);
    assert_eq!(s.emu.count(TOKEN_ROUTE), 1);
    for _ in 0..100 {
        let (status, h) = s.get("/health").await;
        assert_eq!(status, 200, "{h}");
        let source = h["credential"]["source"].as_str().unwrap().to_owned();
        assert!(source == "kv" || source == "memory", "{source}");
    }
    assert_eq!(s.mints(), 1, "100 fresh instances minted nothing more");
    assert_eq!(s.emu.count(TOKEN_ROUTE), 1);
    println!("mints after 101 requests: {}", s.mints());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_cold_requests_share_a_mint() {
    let s = Stack::start().await;
    let results = futures::future::join_all((0..16).map(|_| s.get("/health"))).await;
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
    }
    let minted = results
        .iter()
        .filter(|(_, b)| b["credential"]["source"] == "minted")
        .count();
    println!(
        "16 concurrent cold requests: {} mint(s), {} minted-source answers",
        s.mints(),
        minted
    );
    // One lease holder mints; the others wait for its record. The lease is best effort (no
    // compare-and-swap), so allow a duplicate, never one mint per request.
    assert!(s.mints() <= 2, "mints: {}", s.mints());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_45_minutes_the_next_request_mints_once() {
    let s = Stack::start().await;
    assert_eq!(s.get("/health").await.0, 200);
    s.host.set_clock_offset(Duration::from_secs(44 * 60));
    let (_, h) = s.get("/health").await;
    assert_eq!(h["credential"]["source"], "kv", "44 minutes: still reused");
    assert_eq!(s.mints(), 1);
    s.host.set_clock_offset(Duration::from_secs(46 * 60));
    let (_, h) = s.get("/health").await;
    assert_eq!(h["credential"]["source"], "minted");
    for _ in 0..5 {
        let (_, h) = s.get("/health").await;
        assert_eq!(h["credential"]["source"], "kv");
    }
    assert_eq!(s.mints(), 2, "re-minted exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_recovers_with_exactly_one_remint() {
    let s = Stack::start().await;
    assert_eq!(s.get("/health").await.0, 200);
    s.emu.revoke_all();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, h) = s.get("/health").await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["credential"]["source"], "minted");
    assert_eq!(s.mints(), 2);
    let (status, h) = s.get("/health").await;
    assert_eq!(
        (status, h["credential"]["source"].as_str()),
        (200, Some("kv"))
    );
    assert_eq!(s.mints(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_503_then_success() {
    let s = Stack::start().await;
    s.emu.fault(Fault {
        route: CREDENTIAL_ROUTE.into(),
        count: 1,
        kind: FaultKind::Status {
            status: 503,
            error_code: "TEMPORARILY_UNAVAILABLE".into(),
            message: "busy".into(),
            retry_after: Some(1),
        },
    });
    let started = std::time::Instant::now();
    let (status, h) = s.get("/health").await;
    assert_eq!(status, 200, "{h}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited Retry-After"
    );
    assert_eq!(s.emu.count(CREDENTIAL_ROUTE), 2);
    let log = s.emu.log_lines().join("\n");
    assert!(log.contains(&format!("{CREDENTIAL_ROUTE} -> 503")), "{log}");
}

async fn error_of(s: &Stack, path: &str) -> (u16, String, String) {
    let (status, body) = s.get(path).await;
    let e = &body["error"];
    (
        status,
        e["kind"].as_str().unwrap_or_default().to_owned(),
        e["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_name_who_must_act() {
    let s = Stack::start().await;
    s.emu.fault(Fault {
        route: CREDENTIAL_ROUTE.into(),
        count: 1,
        kind: FaultKind::Status {
            status: 403,
            error_code: "PERMISSION_DENIED".into(),
            message: "no USE on project".into(),
            retry_after: None,
        },
    });
    let (status, kind, message) = error_of(&s, "/health").await;
    assert_eq!((status, kind.as_str()), (502, "permission"), "{message}");
    assert!(
        message.contains("PERMISSION_DENIED") && message.contains("grant"),
        "{message}"
    );

    let s = Stack::start_with(|v| {
        v.insert(
            "lakebase_endpoint".into(),
            "projects/nope/branches/b/endpoints/e".into(),
        );
    })
    .await;
    let (status, kind, message) = error_of(&s, "/health").await;
    assert_eq!((status, kind.as_str()), (502, "not_found"), "{message}");
    assert!(message.contains("lakebase_endpoint"), "{message}");

    let s = Stack::start_with(|v| {
        v.insert("databricks_client_secret".into(), "wrong-secret".into());
    })
    .await;
    let (status, kind, message) = error_of(&s, "/health").await;
    assert_eq!(
        (status, kind.as_str()),
        (502, "workspace_auth"),
        "{message}"
    );
    assert!(message.contains("databricks_client_secret"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_name_the_variable() {
    let cases: [(&str, &str, &str); 4] = [
        ("lakebase_endpoint", "", "lakebase_endpoint"),
        ("lakebase_endpoint", "my-endpoint", "lakebase_endpoint"),
        ("pgport", "0", "pgport"),
        ("pgsslmode", "verify-ca", "pgsslmode"),
    ];
    for (name, value, mentioned) in cases {
        let s = Stack::start_with(|v| {
            v.insert(name.into(), value.into());
        })
        .await;
        let (status, kind, message) = error_of(&s, "/health").await;
        assert_eq!(
            (status, kind.as_str()),
            (500, "configuration"),
            "{name}={value}: {message}"
        );
        assert!(
            message.contains(&format!("`{mentioned}`")),
            "{name}={value}: {message}"
        );
    }
    // A required variable without a value stops the host at start, naming it; so does a value
    // that makes a templated allowed host invalid (as Spin does when it loads the app).
    let s = Stack::start().await;
    let mut vars = s.vars.clone();
    vars.remove("databricks_host");
    let err = load_host(&vars, &s.state_dir).err().expect("refused");
    assert!(format!("{err:#}").contains("databricks_host"), "{err:#}");
    let mut vars = s.vars.clone();
    vars.insert("pgport".into(), "http".into());
    let err = load_host(&vars, &s.state_dir).err().expect("refused");
    assert!(format!("{err:#}").contains("`pgport`"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_api_end_to_end() {
    let s = Stack::start().await;
    let (status, note) = s
        .request("POST", "/notes", r#"{"text":"hello lakebase"}"#)
        .await;
    assert_eq!(status, 201, "{note}");
    assert_eq!(note["text"], "hello lakebase");
    let id = note["id"].as_i64().unwrap();
    assert!(note["created_at"].as_str().unwrap().ends_with('Z'));
    let (status, got) = s.get(&format!("/notes/{id}")).await;
    assert_eq!((status, &got), (200, &note));
    s.request("POST", "/notes", r#"{"text":"second"}"#).await;
    let (status, list) = s.get("/notes?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(list["notes"].as_array().unwrap().len(), 1);
    assert_eq!(list["notes"][0]["text"], "second", "newest first");
    let (_, all) = s.get("/notes").await;
    assert_eq!(all["notes"].as_array().unwrap().len(), 2);
    assert_eq!(
        s.request("DELETE", &format!("/notes/{id}"), "").await.0,
        204
    );
    let (status, body) = s.get(&format!("/notes/{id}")).await;
    assert_eq!(
        (status, body["error"]["kind"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(
        s.request("DELETE", &format!("/notes/{id}"), "").await.0,
        404
    );
    for (method, path, body, field) in [
        ("POST", "/notes", "not json", "JSON"),
        ("POST", "/notes", r#"{"text":""}"#, "`text`"),
        ("POST", "/notes", r#"{"txt":"x"}"#, "`text`"),
        ("GET", "/notes?limit=501", "", "`limit`"),
        ("GET", "/notes/abc", "", "positive integer"),
    ] {
        let (status, b) = s.request(method, path, body).await;
        assert_eq!(status, 400, "{method} {path} {body}: {b}");
        assert_eq!(b["error"]["kind"], "bad_request");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(field),
            "{b}"
        );
    }
    let (status, b) = s.get("/nowhere").await;
    assert_eq!(
        (status, b["error"]["kind"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(s.mints(), 1, "the whole session used one credential");
}

#[test]
fn the_app_world_is_what_spin_provides() {
    let (imports, exports) = lakebase_devhost::component_world(&app_wasm()).unwrap();
    assert!(
        exports.iter().any(|e| e == "wasi:http/handler@0.3.0"),
        "{exports:?}"
    );
    for needed in [
        "spin:postgres/postgres@4.2.0",
        "spin:key-value/key-value@3.0.0",
        "spin:variables/variables@3.0.0",
    ] {
        assert!(
            imports.iter().any(|i| i == needed),
            "missing {needed}: {imports:?}"
        );
    }
    for i in &imports {
        let ok = i.starts_with("wasi:")
            || i.starts_with("spin:postgres/postgres@4.2.0")
            || i.starts_with("spin:key-value/key-value@3.0.0")
            || i.starts_with("spin:variables/variables@3.0.0");
        assert!(ok, "unexpected import {i}");
    }
    println!("imports: {imports:?}\nexports: {exports:?}");
    let _ = Value::Null;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_verifies_against_the_configured_ca() {
    // The production path: TLS required, the certificate verified against `lakebase_ca_root`.
    let s = Stack::start_opts(true, |v, emu| {
        v.insert("pgsslmode".into(), "require".into());
        v.insert("lakebase_ca_root".into(), emu.ca_pem().unwrap().to_owned());
    })
    .await;
    let (status, h) = s.get("/health").await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["credential"]["source"], "minted");

    // Without the CA, the host refuses the certificate: a configuration error naming the variable.
    let s = Stack::start_opts(true, |v, _| {
        v.insert("pgsslmode".into(), "require".into());
    })
    .await;
    let (status, kind, message) = error_of(&s, "/health").await;
    assert_eq!((status, kind.as_str()), (500, "configuration"), "{message}");
    assert!(message.contains("lakebase_ca_root"), "{message}");
}
