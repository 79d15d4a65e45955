//! Fidelity: the official Databricks SDK for Python (from PyPI) talks to the emulator as to a
//! workspace: OAuth M2M, SCIM Me, and both credential APIs.

use std::path::PathBuf;
use std::process::Command;

use lakebase_emulator::*;
use lakebase_testkit::PgCluster;

/// A virtualenv with databricks-sdk under target/ (created once, reused).
fn python_with_sdk() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/python-sdk-venv");
    let python = venv.join("bin/python");
    let has_sdk = python.exists()
        && Command::new(&python)
            .args(["-c", "import databricks.sdk"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !has_sdk {
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .expect("python3 -m venv")
            .success();
        assert!(ok, "creating a virtualenv failed (install python3-venv)");
        let ok = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "databricks-sdk>=0.60"])
            .status()
            .expect("pip install databricks-sdk")
            .success();
        assert!(ok, "pip install databricks-sdk failed");
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_works_against_the_emulator() {
    let python = tokio::task::spawn_blocking(python_with_sdk).await.unwrap();
    let pg = PgCluster::start().unwrap();
    let emu = Emulator::start(EmulatorOptions::new(Backend {
        host: pg.host().into(),
        port: pg.port(),
        admin_user: pg.superuser().into(),
        admin_password: pg.superuser_password().into(),
    }))
    .await
    .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/sdk_check.py");
    let url = emu.http_url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([
                &url,
                DEFAULT_CLIENT_ID,
                DEFAULT_CLIENT_SECRET,
                DEFAULT_ENDPOINT,
                DEFAULT_INSTANCE,
            ])
            .env_remove("DATABRICKS_CONFIG_PROFILE")
            .env("DATABRICKS_CONFIG_FILE", "/nonexistent")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SDK run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["me"], DEFAULT_CLIENT_ID);
    assert!(v["autoscaling_token_len"].as_u64().unwrap() > 800, "{v}");
    assert!(v["provisioned_token_len"].as_u64().unwrap() > 800, "{v}");
    assert_eq!(emu.count("POST /oidc/v1/token"), 1, "{:?}", emu.counts());
    assert_eq!(emu.mints(), 2);
    println!("databricks-sdk against the emulator: {v}");
}
