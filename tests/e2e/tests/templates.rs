//! The `spin new` templates in `templates/`, as a new user meets them: installed into a
//! throwaway Spin home with `spin templates install --dir`, instantiated with `spin new
//! --accept-defaults`, built with `spin build` (the library dependency pointed at this checkout
//! with a `[patch]`, for the test only) and served by the real Spin against the emulator.
//! Needs a real Spin (`$SPIN`, else `spin` on the PATH); says so and passes without one.

use std::path::Path;
use std::process::Command;

use lakebase_e2e::*;
use lakebase_testkit::host::{HostKind, HostOptions, HostProcess};

fn spin(bin: &Path, data: &Path, dir: &Path, args: &[&str]) {
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("SPIN_DATA_DIR", data)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running spin");
    assert!(
        out.status.success(),
        "spin {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Instantiates `template` as `name` and builds it; returns the app's directory.
fn new_app(bin: &Path, template: &str, name: &str, values: &[&str]) -> std::path::PathBuf {
    let dir = temp_dir(&format!("template-{name}"));
    let data = dir.join("spin-data");
    spin(
        bin,
        &data,
        &repo_root(),
        &["templates", "install", "--dir", ".", "--update"],
    );
    let mut args = vec!["new", "-t", template, name, "--accept-defaults"];
    for v in values {
        args.extend(["--value", v]);
    }
    spin(bin, &data, &dir, &args);
    let app = dir.join(name);
    // For this test only: the unpublished library from this checkout, and a shared target
    // directory so that spin-sdk is not compiled again for every run.
    let mut cargo = std::fs::read_to_string(app.join("Cargo.toml")).unwrap();
    if cargo.contains("lakebase-spin") {
        cargo.push_str(&format!(
            "\n[patch.crates-io]\nlakebase-spin = {{ path = {:?} }}\n",
            repo_root().display().to_string()
        ));
    }
    std::fs::write(app.join("Cargo.toml"), cargo).unwrap();
    let shared = repo_root().join("target/template-apps");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, app.join("target")).unwrap();
    spin(bin, &data, &app, &["build"]);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_instantiate_build_and_serve_on_spin() {
    let Some(kind @ HostKind::Spin { .. }) = HostKind::spin_from_env() else {
        eprintln!(
            "NOTE: no Spin CLI ($SPIN unset and no `spin` on the PATH): the template test was NOT run"
        );
        return;
    };
    let HostKind::Spin { bin } = &kind else {
        unreachable!()
    };
    plugin_wasm();
    let plugin = repo_root().join("target/wasm32-wasip2/release/lakebase_plugin.wasm");
    let plugin_value = format!("plugin-path={}", plugin.display());
    let cases: [(&str, &str, Vec<&str>); 2] = [
        ("lakebase-http-rust", "lbhttp", vec![]),
        ("lakebase-plugin", "lbplugin", vec![plugin_value.as_str()]),
    ];
    for (template, name, values) in cases {
        let app = new_app(bin, template, name, &values);
        let up = Upstream::start().await;
        let node = HostProcess::start(
            &kind,
            &HostOptions {
                manifest: app.join("spin.toml"),
                variables: up.variables(),
                runtime_config: None,
                state_dir: app.join(".spin"),
            },
        )
        .unwrap_or_else(|e| panic!("{template}: {e:#}"));
        for i in 0..3 {
            let (status, body) = tokio::task::block_in_place(|| node.get("/")).unwrap();
            assert_eq!(status, 200, "{template}: {body}\n{}", node.logs());
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                v["user"],
                lakebase_emulator::DEFAULT_CLIENT_ID,
                "{template}: {body}"
            );
            if template == "lakebase-http-rust" {
                let expected = if i == 0 { "minted" } else { "memory" };
                let source = v["credential"]["source"].as_str().unwrap();
                assert!(
                    source == expected || (i > 0 && source == "kv"),
                    "{template}: {body}"
                );
                assert!(
                    v["credential"]["expires_in_s"].as_i64().unwrap() > 3500,
                    "{body}"
                );
            }
        }
        assert_eq!(up.mints(), 1, "{template}: one mint for three requests");
        println!("template {template}: spin new, spin build, 3 × GET / → 200, 1 mint");
    }
}
