//! The standard-WASI build (`examples/notes-wasi` on `crates/wasi`) on `wasmtime serve`:
//! wasmtime's own implementations of `wasi:http`, `wasi:config`, `wasi:keyvalue` and
//! `wasi:sockets`, against the emulator and a real PostgreSQL behind its TLS login proxy, with
//! Postgres spoken by the component itself (TLS verified against `lakebase_ca_root`).
//!
//! The wasmtime is `$WASMTIME`, else `wasmtime` on the PATH (`.ci/run` passes the workplace's);
//! without one these scenarios say so and pass (the world check still runs).

use std::collections::BTreeMap;
use std::sync::Arc;

use lakebase_e2e::{Upstream, notes_wasi_wasm, temp_dir, wasmtime_tier};
use lakebase_emulator::DEFAULT_CLIENT_ID;
use lakebase_testkit::host::{HostKind, HostProcess};
use serde_json::Value;

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
    let cases: [(&str, Option<&str>, u16, &str); 3] = [
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
        if let Some(v) = value {
            assert!(
                !text.contains(v) && !host.logs().contains(v),
                "{name}: echoed"
            );
        }
    }
}
