//! The WASIp2 plugin (`crates/plugin-p2`, `lakebase_plugin_p2.wasm`): its world, and composed
//! into a WASIp2 component that uses plain `spin_sdk::pg4` (`tests/pg-consumer-p2`) and into one
//! that calls its `credentials-sync` (`tests/credentials-consumer-p2`), on the host processes of
//! [`lakebase_e2e::p2_hosts`] (the devhost as Spin 3.6.3, and a real Spin when one is found), against the
//! emulated workspace and a real PostgreSQL.

use std::collections::BTreeMap;
use std::path::Path;

use lakebase_e2e::*;
use lakebase_emulator::DEFAULT_CLIENT_ID;
use lakebase_testkit::host::{HostKind, HostOptions, HostProcess};
use serde_json::Value;

#[test]
fn the_p2_plugin_world_is_what_spin_3_4_provides() {
    let (mut imports, mut exports) = lakebase_devhost::component_world(&plugin_p2_wasm()).unwrap();
    println!("imports: {imports:?}\nexports: {exports:?}");
    exports.sort();
    assert_eq!(
        exports,
        [
            "lakebase:postgres-p2/credentials-sync@0.1.0",
            "spin:postgres/postgres@4.0.0",
        ]
    );
    imports.sort();
    assert_eq!(
        imports, SPIN_P2_IMPORTS,
        "the WASIp2 plugin's imports changed"
    );
}

const CONSUMER: &str = "tests/pg-consumer-p2/spin.toml";

/// The consumer on `kind`, its allowed hosts widened to the real PostgreSQL (for the
/// pass-through address `direct_address`, a plain connection string to it).
fn start(kind: &HostKind, up: &Upstream, dir: &Path) -> HostProcess {
    let pg_host = format!("postgres://{}:{}", up.pg.host(), up.pg.port());
    let manifest = manifest_copy(CONSUMER, dir, |text| {
        text.replace(
            "\"postgres://*:{{ pgport }}\"]",
            &format!("\"postgres://*:{{{{ pgport }}}}\", \"{pg_host}\"]"),
        )
    });
    let mut variables: BTreeMap<String, String> = up.variables();
    variables.insert("direct_address".into(), direct_address(up));
    serve(kind, manifest, variables, dir)
}

/// `manifest` on `kind` with `variables`, its state under `dir`.
fn serve(
    kind: &HostKind,
    manifest: std::path::PathBuf,
    variables: BTreeMap<String, String>,
    dir: &Path,
) -> HostProcess {
    HostProcess::start(
        kind,
        &HostOptions {
            manifest,
            variables,
            runtime_config: None,
            state_dir: dir.join("state"),
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e:#}", kind.name()))
}

fn direct_address(up: &Upstream) -> String {
    format!(
        "postgres://{}:{}@{}:{}/postgres?sslmode=disable",
        up.pg.superuser(),
        up.pg.superuser_password(),
        up.pg.host(),
        up.pg.port()
    )
}

/// `GET path`: the status and the JSON body; the raw body is appended to `seen`.
fn get(node: &HostProcess, path: &str, seen: &mut String) -> (u16, Value) {
    let (status, body) = tokio::task::block_in_place(|| node.get(path)).unwrap();
    seen.push_str(&body);
    let value = serde_json::from_str(&body)
        .unwrap_or_else(|_| panic!("{path}: not JSON ({status}): {body}\n{}", node.logs()));
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_p2_plugin_serves_lakebase_passes_through_and_recovers_a_revoked_token() {
    plugin_p2_wasm();
    for kind in p2_hosts() {
        let name = kind.name();
        let up = Upstream::start().await;
        let node = start(&kind, &up, &temp_dir("plugin-p2"));
        let mut seen = String::new();

        // `lakebase:`: logged in as the principal; one mint over fresh instances.
        let (status, body) = get(&node, "/health?via=lakebase", &mut seen);
        assert_eq!(status, 200, "{name}: {body}\n{}", node.logs());
        assert_eq!(body["user"], DEFAULT_CLIENT_ID, "{name}: {body}");
        assert_eq!(body["database"], "databricks_postgres", "{name}");
        for _ in 0..10 {
            let (status, body) = get(&node, "/select1?via=lakebase", &mut seen);
            assert_eq!(status, 200, "{name}: {body}");
            assert_eq!((&body["one"], &body["executed"]), (&1.into(), &1.into()));
        }
        assert_eq!(
            up.mints(),
            1,
            "{name}: 11 requests (WASIp2: an instance each), one mint"
        );

        // A plain connection string goes to the host untouched: its own role, no credential.
        let tokens = up.emu.count(TOKEN_ROUTE);
        let (status, body) = get(&node, "/health?via=direct", &mut seen);
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["user"], up.pg.superuser(), "{name}: {body}");
        assert_eq!(body["database"], "postgres", "{name}");
        assert_eq!(up.mints(), 1, "{name}: no credential for a plain address");
        assert_eq!(up.emu.count(TOKEN_ROUTE), tokens, "{name}");

        // A revoked token: the login fails with 28P01, the plugin mints once more.
        up.revoke_all_and_wait_for_the_cut();
        let (status, body) = get(&node, "/health?via=lakebase", &mut seen);
        assert_eq!(status, 200, "{name}: {body}\n{}", node.logs());
        assert_eq!(up.mints(), 2, "{name}: exactly one re-mint");
        for _ in 0..3 {
            let (status, _) = get(&node, "/select1?via=lakebase", &mut seen);
            assert_eq!(status, 200, "{name}");
        }
        assert_eq!(up.mints(), 2, "{name}: the new credential is reused");

        println!(
            "{name:7} WASIp2 plugin: {} mint(s), {} workspace token(s)",
            up.mints(),
            up.emu.count(TOKEN_ROUTE)
        );
        let mut logs = node.logs();
        logs.push_str(&up.emu.log_lines().join("\n"));
        up.assert_no_secret(&seen, &logs);
        let password = up.pg.superuser_password();
        assert!(!seen.contains(password), "{name}: a password in an answer");
    }
}

const CREDENTIALS_CONSUMER: &str = "tests/credentials-consumer-p2/spin.toml";

/// The `credentials-sync` consumer on `kind`, with `variables`.
fn start_credentials_consumer(
    kind: &HostKind,
    variables: BTreeMap<String, String>,
    dir: &Path,
) -> HostProcess {
    serve(
        kind,
        manifest_copy(CREDENTIALS_CONSUMER, dir, |text| text),
        variables,
        dir,
    )
}

/// `lakebase:postgres-p2/credentials-sync` called by a WASIp2 component
/// (`tests/credentials-consumer-p2`): minted once then shared through the key-value store by
/// fresh instances, a login with its connection string as the principal, `invalidate` makes the
/// next `get` mint once more, a wrong secret is a `workspace_auth` error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p2_component_gets_and_invalidates_credentials_through_credentials_sync() {
    let consumer = credentials_consumer_p2_wasm();
    let (imports, _) = lakebase_devhost::component_world(&consumer).unwrap();
    assert!(
        imports
            .iter()
            .any(|i| i == "lakebase:postgres-p2/credentials-sync@0.1.0"),
        "the consumer imports credentials-sync: {imports:?}"
    );
    for kind in p2_hosts() {
        let name = kind.name();
        let up = Upstream::start().await;
        let node = start_credentials_consumer(&kind, up.variables(), &temp_dir("creds-p2"));
        let mut seen = String::new();

        // The first call mints; the connection string logs in as the principal.
        let (status, body) = get(&node, "/credential", &mut seen);
        assert_eq!(status, 200, "{name}: {body}\n{}", node.logs());
        assert_eq!(body["source"], "minted", "{name}: {body}");
        assert_eq!(body["current_user"], DEFAULT_CLIENT_ID, "{name}: {body}");
        assert_eq!(body["user"], DEFAULT_CLIENT_ID, "{name}: {body}");
        assert_eq!(body["database"], "databricks_postgres", "{name}: {body}");
        assert_eq!(up.mints(), 1, "{name}");

        // Every next request is a fresh WASIp2 instance: the credential comes from the store.
        for _ in 0..5 {
            let (status, body) = get(&node, "/credential", &mut seen);
            assert_eq!(status, 200, "{name}: {body}\n{}", node.logs());
            assert_eq!(body["source"], "kv", "{name}: {body}");
            assert_eq!(body["current_user"], DEFAULT_CLIENT_ID, "{name}: {body}");
            let reuse = body["reuse_in_s"].as_i64().expect("reuse_in_s");
            let expires = body["expires_in_s"].as_i64().expect("expires_in_s");
            assert!(
                0 < reuse && reuse <= 45 * 60 && reuse <= expires,
                "{name}: reused for {reuse} s, expires in {expires} s"
            );
        }
        assert_eq!(up.mints(), 1, "{name}: 6 requests, one mint");

        // `invalidate` drops the current credential: the next `get` mints exactly once more.
        let (status, body) = get(&node, "/invalidate", &mut seen);
        assert_eq!(status, 200, "{name}: {body}\n{}", node.logs());
        assert_eq!(body["dropped"], true, "{name}: {body}");
        assert_eq!(up.mints(), 1, "{name}: invalidate mints nothing");
        let (status, body) = get(&node, "/credential", &mut seen);
        assert_eq!(status, 200, "{name}: {body}\n{}", node.logs());
        assert_eq!(body["source"], "minted", "{name}: {body}");
        assert_eq!(body["current_user"], DEFAULT_CLIENT_ID, "{name}: {body}");
        assert_eq!(up.mints(), 2, "{name}: exactly one re-mint");
        let (status, body) = get(&node, "/credential", &mut seen);
        assert_eq!((status, &body["source"]), (200, &"kv".into()), "{name}");
        assert_eq!(up.mints(), 2, "{name}: the new credential is reused");

        // A revoked token: the login fails, the consumer invalidates it, the next `get` mints.
        up.revoke_all_and_wait_for_the_cut();
        let (status, body) = get(&node, "/credential", &mut seen);
        assert_eq!(
            (status, &body["error"], &body["invalidated"]),
            (502, &"database".into(), &true.into()),
            "{name}: {body}"
        );
        assert_eq!(
            up.mints(),
            2,
            "{name}: a rejected login mints nothing by itself"
        );
        let (status, body) = get(&node, "/credential", &mut seen);
        assert_eq!(status, 200, "{name}: {body}\n{}", node.logs());
        assert_eq!(body["source"], "minted", "{name}: {body}");
        assert_eq!(body["current_user"], DEFAULT_CLIENT_ID, "{name}: {body}");
        assert_eq!(
            up.mints(),
            3,
            "{name}: exactly one re-mint after the revocation"
        );
        let mut logs = node.logs();
        drop(node);

        // A wrong client secret: the workspace refuses it, the value is never shown.
        let wrong = "not-the-secret-0123456789";
        let mut variables = up.variables();
        variables.insert("databricks_client_secret".into(), wrong.into());
        let node = start_credentials_consumer(&kind, variables, &temp_dir("creds-p2-secret"));
        let mut answer = String::new();
        let (status, body) = get(&node, "/credential", &mut answer);
        assert_eq!(
            (status, &body["error"]),
            (502, &"workspace_auth".into()),
            "{name}: {body}\n{}",
            node.logs()
        );
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("databricks_client_secret")),
            "{name}: {body}"
        );
        assert_eq!(up.mints(), 3, "{name}: no credential without the workspace");
        let wrong_logs = node.logs();
        assert!(
            !answer.contains(wrong) && !wrong_logs.contains(wrong),
            "{name}: the wrong secret was echoed"
        );
        seen.push_str(&answer);
        logs.push_str(&wrong_logs);

        println!(
            "{name:7} credentials-sync: {} mint(s), {} workspace token(s)",
            up.mints(),
            up.emu.count(TOKEN_ROUTE)
        );
        logs.push_str(&up.emu.log_lines().join("\n"));
        up.assert_no_secret(&seen, &logs);
        for secret in [up.pg.superuser_password(), "postgres://"] {
            assert!(!seen.contains(secret), "{name}: `{secret}` in an answer");
        }
    }
}

/// Without `dependencies_inherit_configuration` the plugin gets none of the component's
/// configuration (on Spin 3.6.3 and the devhost as 3.6.3, every variable reads as undefined):
/// the error names both switches, and nothing is minted. The per-dependency form, which only
/// Spin 4.0 and later read, does not load on the devhost as 3.6.3, as on the real 3.6.3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_p2_plugin_without_its_parents_configuration_names_both_switches() {
    plugin_p2_wasm();
    for kind in p2_hosts() {
        let name = kind.name();
        let up = Upstream::start().await;
        let dir = temp_dir("plugin-p2-noinherit");
        let manifest = manifest_copy(CONSUMER, &dir, |text| {
            let edited = text.replace("dependencies_inherit_configuration = true\n", "");
            assert_ne!(edited, text, "the consumer's manifest has the switch");
            edited
        });
        let node = serve(&kind, manifest, up.variables(), &dir);
        let mut seen = String::new();
        let (status, body) = get(&node, "/health?via=lakebase", &mut seen);
        println!("{name:7} WASIp2 plugin without its parent's configuration: {status} {body}");
        assert_eq!(status, 500, "{name}: {body}\n{}", node.logs());
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("`dependencies_inherit_configuration = true` to the component")
                && message.contains("`inherit_configuration = true` to the dependency"),
            "{name}: the error names both fixes: {body}"
        );
        assert_eq!(up.mints(), 0, "{name}: nothing minted");
    }

    // The form Spin 4.0 brought, on the devhost as Spin 3.6.3: the app does not load.
    let dir = temp_dir("plugin-p2-per-dependency");
    let manifest = manifest_copy(CONSUMER, &dir, |text| {
        text.replace("dependencies_inherit_configuration = true\n", "")
            .replace(
                "lakebase_plugin_p2.wasm\" }",
                "lakebase_plugin_p2.wasm\", inherit_configuration = true }",
            )
    });
    let options = lakebase_devhost::DevhostOptions {
        manifest: manifest.clone(),
        state_dir: Some(dir.join("state")),
        env: Some(Default::default()),
        spin_version: Flavour::P2.devhost_spin(),
        ..Default::default()
    };
    let refused = match lakebase_devhost::Devhost::load(options) {
        Ok(_) => panic!("the devhost as Spin 3.6.3 loaded a per-dependency inherit_configuration"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        refused.contains("did not match any variant of untagged enum ComponentDependency")
            && refused.contains("dependencies_inherit_configuration = true"),
        "{refused}"
    );
    // The same manifest loads as Spin 4.0.2 and 4.1, which read both forms.
    for version in [
        lakebase_devhost::SpinVersion::new(4, 0, 2),
        lakebase_devhost::SpinVersion::default(),
    ] {
        lakebase_devhost::manifest::App::load_as(&manifest, version)
            .unwrap_or_else(|e| panic!("as Spin {version}: {e:#}"));
    }
}
