//! The WASIp2 flavour (`examples/notes-app-p2` on `crates/spin-p2`, spin-sdk 5.2, `spin-p2.toml`):
//! its world is what Spin 3.4 to 4.0.x and SpinKube provide, and nothing of WASIp3. The runs on
//! a host come with the devhost's WASIp2 support.

use lakebase_devhost::SpinVersion;
use lakebase_e2e::{SPIN_P2_IMPORTS, Upstream, devhost_as, notes_p2_wasm, repo_root, temp_dir};
use lakebase_testkit::host::{HostOptions, HostProcess};
use serde_json::{Value, json};

#[test]
fn the_p2_app_world_is_what_spin_3_and_4_0_provide() {
    let (mut imports, exports) = lakebase_devhost::component_world(&notes_p2_wasm()).unwrap();
    println!("imports: {imports:?}\nexports: {exports:?}");
    assert_eq!(exports, ["wasi:http/incoming-handler@0.2.0"]);
    for i in &imports {
        assert!(
            !i.contains("@0.3")
                && !i.starts_with("spin:key-value")
                && !i.starts_with("spin:variables"),
            "not WASIp2 / Spin 3.x: {i}"
        );
    }
    imports.sort();
    assert_eq!(imports, SPIN_P2_IMPORTS, "the WASIp2 app's imports changed");
}

/// Spin 4.0.0 to 4.0.2 never answer a synchronous `query` that matches no rows
/// (spinframework/spin#3671; the devhost models it as `--spin-version 4.0.2`, as a real 4.0.2
/// was seen to do): the app's routes that can match nothing answer there all the same. Each
/// request below would hang (and fail on the client's timeout) if its query could return no row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_that_match_nothing_answer_on_spin_4_0() {
    notes_p2_wasm();
    let up = Upstream::start().await;
    let kind = devhost_as(SpinVersion::new(4, 0, 2));
    let node = HostProcess::start(
        &kind,
        &HostOptions {
            manifest: repo_root().join("spin-p2.toml"),
            variables: up.variables(),
            runtime_config: None,
            state_dir: temp_dir("p2-empty"),
        },
    )
    .expect("starting the devhost");
    let call = |method: &str, path: &str, body: &str| {
        let (status, text) = tokio::task::block_in_place(|| node.request(method, path, body))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", node.logs()));
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };
    let (status, body) = call("GET", "/notes", "");
    assert_eq!((status, &body["notes"]), (200, &json!([])), "empty table");
    let (status, body) = call("GET", "/notes/424242", "");
    assert_eq!((status, &body["error"]["kind"]), (404, &json!("not_found")));
    let (status, body) = call("POST", "/notes", r#"{"text":"one"}"#);
    assert_eq!(status, 201, "{body}");
    let (status, body) = call("GET", "/notes?limit=5", "");
    assert_eq!(status, 200);
    let notes = body["notes"].as_array().expect("a list");
    assert_eq!(notes.len(), 1, "the row of NULLs is not a note: {body}");
    assert_eq!(notes[0]["text"], "one");
    let id = notes[0]["id"].as_i64().expect("an id");
    assert_eq!(call("GET", &format!("/notes/{id}"), "").0, 200);
    assert_eq!(call("DELETE", &format!("/notes/{id}"), "").0, 204);
    assert_eq!(call("GET", &format!("/notes/{id}"), "").0, 404);
}
