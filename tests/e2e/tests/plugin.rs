//! End to end: the plugin composed into components that use plain `spin:postgres`, on the
//! devhost, against the emulated workspace and a real PostgreSQL.
//!
//! - `tests/pg-consumer`: Rust, plain `spin_sdk::pg`, no dependency on this project;
//! - `tests/python-consumer`: Python, built with componentize-py.

use std::collections::HashMap;
use std::path::PathBuf;

use lakebase_devhost::Devhost;
use lakebase_e2e::*;
use lakebase_emulator::{Backend, DEFAULT_CLIENT_ID, Emulator, EmulatorOptions};
use lakebase_testkit::PgCluster;
use serde_json::Value;

const RUST_CONSUMER: &str = "tests/pg-consumer/spin.toml";
const PYTHON_CONSUMER: &str = "tests/python-consumer/spin.toml";
const CREDENTIALS_CONSUMER: &str = "tests/credentials-consumer/spin.toml";

/// PostgreSQL, the emulator and the consumers' variables.
struct Plugged {
    emu: Emulator,
    vars: HashMap<String, String>,
    dir: PathBuf,
    pg: PgCluster,
}

impl Plugged {
    async fn start() -> Plugged {
        plugin_wasm();
        let pg = PgCluster::start().expect("starting PostgreSQL");
        let emu = Emulator::start(EmulatorOptions::new(Backend {
            host: pg.host().to_owned(),
            port: pg.port(),
            admin_user: pg.superuser().to_owned(),
            admin_password: pg.superuser_password().to_owned(),
        }))
        .await
        .expect("starting the emulator");
        let mut vars = default_vars(&emu);
        // A plain connection string straight to PostgreSQL, for the pass-through checks.
        vars.insert(
            "direct_address".into(),
            format!(
                "postgres://{}:{}@{}:{}/postgres?sslmode=disable",
                pg.superuser(),
                pg.superuser_password(),
                pg.host(),
                pg.port()
            ),
        );
        Plugged {
            emu,
            vars,
            dir: temp_dir("plugin"),
            pg,
        }
    }

    /// The consumer of `manifest`, its allowed hosts widened to the real PostgreSQL, `edit`
    /// applied; every host of one `Plugged` shares one key-value store.
    fn host(&self, manifest: &str, name: &str, edit: impl FnOnce(String) -> String) -> Devhost {
        let pg_host = format!("postgres://{}:{}", self.pg.host(), self.pg.port());
        let path = manifest_copy(manifest, &self.dir.join(name), |text| {
            edit(text.replace(
                "\"postgres://*:{{ pgport }}\"]",
                &format!("\"postgres://*:{{{{ pgport }}}}\", \"{pg_host}\"]"),
            ))
        });
        // Only the variables this manifest declares (`--variable` of an undeclared one fails).
        let text = std::fs::read_to_string(&path).unwrap();
        let vars: HashMap<String, String> = self
            .vars
            .iter()
            .filter(|(k, _)| text.contains(&format!("\n{k} = {{")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        load_manifest(&path, &vars, &self.dir.join("state")).expect("loading the consumer")
    }

    fn mints(&self) -> u64 {
        self.emu.count(CREDENTIAL_ROUTE)
    }
}

fn no_edit(text: String) -> String {
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lakebase_address_mints_once_and_fresh_instances_reuse_it() {
    let p = Plugged::start().await;
    let host = p.host(RUST_CONSUMER, "rust", no_edit);
    let (status, body) = call(&host, "GET", "/health?via=lakebase").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["user"], DEFAULT_CLIENT_ID,
        "logged in as the principal"
    );
    assert_eq!(body["database"], "databricks_postgres");
    assert_eq!(p.mints(), 1);
    for _ in 0..30 {
        let (status, body) = call(&host, "GET", "/select1?via=lakebase").await;
        assert_eq!((status, &body["one"]), (200, &Value::from(1)), "{body}");
    }
    assert_eq!(p.mints(), 1, "31 fresh instances, one mint");
    println!(
        "plugin: 31 requests over fresh instances, {} mint(s)",
        p.mints()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_python_consumers_share_one_mint() {
    python_consumer_wasm();
    let p = Plugged::start().await;
    let rust = p.host(RUST_CONSUMER, "rust", no_edit);
    let python = p.host(PYTHON_CONSUMER, "python", no_edit);
    let (status, body) = call(&rust, "GET", "/health?via=lakebase").await;
    assert_eq!(status, 200, "{body}");
    let q = "/?q=SELECT%20current_user::text%20AS%20u";
    for _ in 0..3 {
        let (status, body) = call(&python, "GET", &format!("{q}&mode=async")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["rows"][0][0], DEFAULT_CLIENT_ID, "{body}");
    }
    assert_eq!(
        p.mints(),
        1,
        "the Python consumer used the Rust consumer's credential"
    );
    // A synchronous open on a fresh instance cannot wait for the cache: a clear error.
    let (status, body) = call(&python, "GET", &format!("{q}&mode=sync")).await;
    assert_eq!(status, 500, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("use `open-async`"), "{message}");
    println!("Rust + Python consumers: {} mint(s)", p.mints());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_reminted_once() {
    let p = Plugged::start().await;
    let host = p.host(RUST_CONSUMER, "rust", no_edit);
    assert_eq!(call(&host, "GET", "/health?via=lakebase").await.0, 200);
    p.emu.revoke_all();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (status, body) = call(&host, "GET", "/health?via=lakebase").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(p.mints(), 2, "exactly one re-mint");
    let (status, _) = call(&host, "GET", "/health?via=lakebase").await;
    assert_eq!((status, p.mints()), (200, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_addresses_pass_through_untouched() {
    let p = Plugged::start().await;
    let host = p.host(RUST_CONSUMER, "rust", no_edit);
    let (status, body) = call(&host, "GET", "/health?via=direct").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["user"],
        p.pg.superuser(),
        "the plain connection string's own role"
    );
    assert_eq!(body["database"], "postgres");
    assert_eq!(p.mints(), 0, "no credential for a plain address");
    assert_eq!(p.emu.count(TOKEN_ROUTE), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_type_round_trips_through_the_plugin() {
    let p = Plugged::start().await;
    let host = p.host(RUST_CONSUMER, "rust", no_edit);
    for via in ["lakebase", "direct"] {
        for api in ["async", "sync"] {
            let (status, body) =
                call(&host, "GET", &format!("/roundtrip?via={via}&api={api}")).await;
            assert_eq!(status, 200, "{via}/{api}: {body}");
            assert_eq!(
                body["mismatches"],
                Value::Array(vec![]),
                "{via}/{api}: {body}"
            );
            assert_eq!(body["checked"], 26, "{via}/{api}");
            assert_eq!(body["executed"], 1, "{via}/{api}");
        }
    }
    // Sync functions on a fresh instance: pass-through works, `lakebase:` says what to do.
    let (status, body) = call(&host, "GET", "/roundtrip?via=direct&api=sync&warm=no").await;
    assert_eq!(
        (status, &body["mismatches"]),
        (200, &Value::Array(vec![])),
        "{body}"
    );
    let (status, body) = call(&host, "GET", "/roundtrip?via=lakebase&api=sync&warm=no").await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("use `open-async`"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rows_stream_without_being_buffered() {
    let p = Plugged::start().await;
    let host = p.host(RUST_CONSUMER, "rust", no_edit);
    // 10,000 rows of 1,000 bytes: 10 MB of row data.
    let mut peaks = Vec::new();
    for via in ["direct", "lakebase"] {
        let (status, body) =
            call(&host, "GET", &format!("/rows?via={via}&n=10000&width=1000")).await;
        assert_eq!(status, 200, "{via}: {body}");
        assert_eq!(
            (body["rows"].as_u64(), body["bytes"].as_u64()),
            (Some(10_000), Some(10_000_000))
        );
        peaks.push(host.last_peak_memory());
    }
    println!(
        "peak linear memory for 10,000 rows (10 MB): direct {} bytes, through the plugin {} bytes",
        peaks[0], peaks[1]
    );
    // Buffering the result anywhere (consumer or plugin) would need more than the 10 MB of rows.
    assert!(
        peaks[1] < 10_000_000,
        "through the plugin: {} bytes",
        peaks[1]
    );
    assert!(
        peaks[1] < peaks[0] + 2_000_000,
        "the plugin adds at most its own memory: {peaks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_inherited_configuration_the_plugin_is_not_permitted() {
    let p = Plugged::start().await;
    let host = p.host(RUST_CONSUMER, "rust-denied", |text| {
        text.replace(", inherit_configuration = true", "")
    });
    let (status, body) = call(&host, "GET", "/health?via=direct").await;
    assert_eq!(status, 500, "{body}");
    let message = body["error"].as_str().unwrap();
    // Spin's wording, `"spin:postgres/postgres" is not permitted` (quotes escaped by the
    // consumer's Debug-style error text).
    assert!(
        message.contains("spin:postgres/postgres") && message.contains("is not permitted"),
        "{message}"
    );
    // Through the plugin: its variables are all undefined (as on Spin), and the error says
    // what to add.
    let (status, body) = call(&host, "GET", "/health?via=lakebase").await;
    assert_eq!(status, 500, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("inherit_configuration = true"),
        "{message}"
    );
    assert_eq!(p.mints(), 0);

    // Inheriting only some capability sets: variables and key-value, but no outbound hosts.
    let host = p.host(RUST_CONSUMER, "rust-partial", |text| {
        text.replace(
            "inherit_configuration = true",
            "inherit_configuration = [\"variables\", \"key_value_stores\"]",
        )
    });
    let (status, body) = call(&host, "GET", "/health?via=direct").await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("is not permitted"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credentials_interface_serves_the_same_cache() {
    let p = Plugged::start().await;
    let creds = p.host(CREDENTIALS_CONSUMER, "credentials", no_edit);
    let pg = p.host(RUST_CONSUMER, "rust", no_edit);
    let (status, body) = call(&creds, "GET", "/credential").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "minted");
    assert_eq!(
        body["current_user"], DEFAULT_CLIENT_ID,
        "its connection string logs in"
    );
    assert_eq!(body["database"], "databricks_postgres");
    let expires = body["expires_in_s"].as_i64().unwrap();
    let reuse = body["reuse_in_s"].as_i64().unwrap();
    assert!(
        (3590..=3600).contains(&expires) && (2690..=2700).contains(&reuse),
        "{body}"
    );
    assert!(!body.to_string().contains("password"), "{body}");
    let (status, body) = call(&creds, "GET", "/credential").await;
    assert_eq!(
        (status, &body["source"]),
        (200, &Value::from("kv")),
        "{body}"
    );
    // The spin:postgres consumer uses the same credential.
    assert_eq!(call(&pg, "GET", "/health?via=lakebase").await.0, 200);
    assert_eq!(p.mints(), 1);
    // Invalidating drops it from the store: the next get mints.
    let (status, body) = call(&creds, "GET", "/invalidate").await;
    assert_eq!(
        (status, &body["dropped"]),
        (200, &Value::from(true)),
        "{body}"
    );
    let (_, body) = call(&creds, "GET", "/credential").await;
    assert_eq!(body["source"], "minted", "{body}");
    assert_eq!(p.mints(), 2);
}

#[test]
fn the_plugin_world_exports_credentials_and_postgres() {
    plugin_wasm();
    let wasm = repo_root().join("target/wasm32-wasip2/release/lakebase_plugin.wasm");
    let (imports, exports) = lakebase_devhost::component_world(&wasm).unwrap();
    println!(
        "plugin imports: {imports:?}\nplugin exports: {exports:?}\nsize: {} bytes",
        std::fs::metadata(&wasm).unwrap().len()
    );
    for needed in [
        "lakebase:postgres/credentials@0.1.0",
        "spin:postgres/postgres@4.2.0",
    ] {
        assert!(
            exports.iter().any(|e| e == needed),
            "{needed} not in {exports:?}"
        );
    }
    for i in &imports {
        let ok = i.starts_with("wasi:")
            || i == "spin:postgres/postgres@4.2.0"
            || i == "spin:key-value/key-value@3.0.0"
            || i == "spin:variables/variables@3.0.0";
        assert!(ok, "unexpected import {i}");
    }
    let consumer = repo_root().join("target/wasm32-wasip2/release/lakebase_pg_consumer.wasm");
    let (imports, _) = lakebase_devhost::component_world(&consumer).unwrap();
    assert!(imports.iter().any(|i| i == "spin:postgres/postgres@4.2.0"));
    assert!(
        !imports.iter().any(|i| i.starts_with("lakebase:")),
        "the consumer knows nothing of Lakebase"
    );
}
