//! The `spin new` templates in `templates/` (the HTTP one and the plugin one, each in both
//! flavours: WASIp3 and WASIp2), as a new user meets them, on every host of
//! [`lakebase_e2e::hosts`]: with a real Spin (`$SPIN`, else `spin` on the PATH) installed into a
//! throwaway Spin home with `spin templates install --dir`, instantiated with `spin new
//! --accept-defaults` and built with `spin build`; on the devhost rendered by [`render`] (the
//! few Liquid forms the templates use) and built with the manifest's build command. Either way
//! the library dependency points at this checkout with a `[patch]` (for the test only), and the
//! app is served against the emulator.

use std::path::Path;
use std::process::Command;

use lakebase_devhost::SpinVersion;
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

/// Instantiates `template` as `name` with `spin new` and builds it with `spin build`; returns
/// the app's directory.
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
    prepare(&app);
    spin(bin, &data, &app, &["build"]);
    app
}

/// `template` rendered as `name` the way `spin new --accept-defaults` does (each parameter's
/// default, `values` as `key=value` over them; `{% raw %}` kept verbatim; `.tmpl` dropped from
/// file names) and built with its manifest's build command; returns the app's directory. The
/// test names are lowercase words, which every case filter leaves as they are.
fn render(template: &str, name: &str, values: &[&str]) -> std::path::PathBuf {
    let root = repo_root().join("templates").join(template);
    let meta: toml::Table = std::fs::read_to_string(root.join("metadata/spin-template.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mut params: Vec<(String, String)> = vec![
        ("project-name".into(), name.into()),
        ("authors".into(), "lakebase tests".into()),
    ];
    for (key, spec) in meta
        .get("parameters")
        .and_then(|p| p.as_table())
        .into_iter()
        .flatten()
    {
        let default = spec
            .get("default")
            .and_then(|d| d.as_str())
            .unwrap_or_default();
        params.push((key.clone(), default.to_owned()));
    }
    for v in values {
        let (key, value) = v.split_once('=').unwrap();
        params.retain(|(k, _)| k != key);
        params.push((key.into(), value.into()));
    }
    let app = temp_dir(&format!("template-{name}")).join(name);
    let mut pending = vec![root.join("content")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(root.join("content")).unwrap();
            let relative = relative.to_str().unwrap().trim_end_matches(".tmpl");
            let mut text = std::fs::read_to_string(&path).unwrap();
            // Outside `{% raw %}` blocks, `{{key}}` and `{{key | filter}}` are parameters.
            let mut out = String::new();
            for (i, part) in text.split("{% raw %}").enumerate() {
                let (raw, rest) = if i == 0 {
                    ("", part)
                } else {
                    part.split_once("{% endraw %}").unwrap()
                };
                out.push_str(raw);
                let mut rest = rest.to_owned();
                for (key, value) in &params {
                    for filter in ["", " | snake_case", " | kebab_case"] {
                        rest = rest.replace(&format!("{{{{{key}{filter}}}}}"), value);
                    }
                }
                out.push_str(&rest);
            }
            text = out;
            assert!(
                !text.contains("{%") && !text.contains("{{project"),
                "{template}/{relative}: left unrendered:\n{text}"
            );
            let target = app.join(relative);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(target, text).unwrap();
        }
    }
    prepare(&app);
    let manifest: toml::Table = std::fs::read_to_string(app.join("spin.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let command = manifest["component"][name]["build"]["command"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = Command::new("sh")
        .args(["-c", &command])
        .current_dir(&app)
        .status()
        .expect("running the build command");
    assert!(status.success(), "{template}: `{command}` failed");
    app
}

/// For this test only: the unpublished library from this checkout, and a shared target
/// directory so that spin-sdk is not compiled again for every run.
fn prepare(app: &Path) {
    let mut cargo = std::fs::read_to_string(app.join("Cargo.toml")).unwrap();
    if cargo.contains("lakebase-spin-p2") {
        cargo.push_str(&format!(
            "\n[patch.crates-io]\nlakebase-spin-p2 = {{ path = {:?} }}\n",
            repo_root().join("crates/spin-p2").display().to_string()
        ));
    } else if cargo.contains("lakebase-spin") {
        cargo.push_str(&format!(
            "\n[patch.crates-io]\nlakebase-spin = {{ path = {:?} }}\n",
            repo_root().display().to_string()
        ));
    }
    std::fs::write(app.join("Cargo.toml"), cargo).unwrap();
    let shared = repo_root().join("target/template-apps");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, app.join("target")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_instantiate_build_and_serve() {
    plugin_wasm();
    let plugin = repo_root().join("target/wasm32-wasip2/release/lakebase_plugin.wasm");
    let plugin_value = format!("plugin-path={}", plugin.display());
    let plugin_p2_value = format!("plugin-path={}", plugin_p2_wasm().display());
    // Each template on the Spins it targets: the WASIp3 ones as Spin 4.1 (and on a real Spin
    // of 4.1 or later); the -p2 ones (WASIp2, spin-sdk 5.2) as Spin 3.6.3 (SpinKube 0.24) and
    // 4.0.2 (SpinKube 0.25's line: its zero-row hang included), and on any real Spin from 3.4.
    let cases: [(&str, &str, Vec<&str>, Flavour); 4] = [
        ("lakebase-http-rust", "lbhttp", vec![], Flavour::P3),
        ("lakebase-http-rust-p2", "lbhttpp2", vec![], Flavour::P2),
        (
            "lakebase-plugin",
            "lbplugin",
            vec![plugin_value.as_str()],
            Flavour::P3,
        ),
        (
            "lakebase-plugin-p2",
            "lbpluginp2",
            vec![plugin_p2_value.as_str()],
            Flavour::P2,
        ),
    ];
    for (template, name, values, flavour) in &cases {
        let mut kinds = hosts_for(*flavour);
        if *flavour == Flavour::P2 && kinds.iter().any(|k| k.name() == "devhost") {
            kinds.insert(1, devhost_as(SpinVersion::new(4, 0, 2)));
        }
        // Rendered and built once for every devhost mode.
        let mut rendered = None;
        for kind in kinds {
            let app = match &kind {
                HostKind::Spin { bin } => new_app(bin, template, name, values),
                _ => rendered
                    .get_or_insert_with(|| render(template, name, values))
                    .clone(),
            };
            let _ = std::fs::remove_dir_all(app.join(".spin"));
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
                if template.starts_with("lakebase-http-rust") {
                    // WASIp2 gets a fresh instance per request: later requests read the record ("kv").
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
            println!(
                "template {template} on {kind:?}: instantiated, built, 3 × GET / → 200, 1 mint"
            );
        }
    }
}
