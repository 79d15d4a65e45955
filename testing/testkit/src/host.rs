//! A Spin app served by a host process: the devhost (`devhost up`) or a real Spin (`spin up`),
//! or a standard-WASI component on `wasmtime serve`, the wasmCloud-like test host or a real
//! wasmCloud host (`wash host`, [`HostProcess::wash_host`]), on a free loopback port, with its
//! logs captured, stopped on drop. The end-to-end scenarios and the load command take a
//! [`HostKind`] so that the same scenario runs on both.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::free_port;
use crate::wash::{NatsClient, OciRegistry};

/// Which host serves the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// The devhost binary (`devhost up`), with extra arguments (e.g. `--fresh-instances`).
    Devhost { bin: PathBuf, args: Vec<String> },
    /// A real Spin CLI (`spin up`).
    Spin { bin: PathBuf },
    /// `wasmtime serve` (the standard-WASI build; see [`HostProcess::wasmtime_serve`]).
    WasmtimeServe { bin: PathBuf },
    /// The wasmCloud-like test host, `testing/wasmcloud-host` (the standard-WASI build; see
    /// [`HostProcess::wasmcloud_host`]).
    WasmcloudHost { bin: PathBuf },
    /// A real wasmCloud host, `wash host` (the standard-WASI build; see
    /// [`HostProcess::wash_host`]).
    Wash { bin: PathBuf },
}

impl HostKind {
    /// The real Spin to test with: `$SPIN` if set, else `spin` on the `PATH`; `None` when
    /// there is neither.
    pub fn spin_from_env() -> Option<HostKind> {
        tool_from_env("SPIN", "spin").map(|bin| HostKind::Spin { bin })
    }

    /// The `wasmtime` to serve the standard-WASI build with: `$WASMTIME` if set, else
    /// `wasmtime` on the `PATH`; `None` when there is neither.
    pub fn wasmtime_from_env() -> Option<HostKind> {
        tool_from_env("WASMTIME", "wasmtime").map(|bin| HostKind::WasmtimeServe { bin })
    }

    /// The real wasmCloud host to test with: `$WASH` if set, else `wash` on the `PATH`; `None`
    /// when there is neither.
    pub fn wash_from_env() -> Option<HostKind> {
        tool_from_env("WASH", "wash").map(|bin| HostKind::Wash { bin })
    }

    /// `"devhost"`, `"spin"`, `"wasmtime"`, `"wasmcloud-host"` or `"wash"`.
    pub fn name(&self) -> &'static str {
        match self {
            HostKind::Devhost { .. } => "devhost",
            HostKind::Spin { .. } => "spin",
            HostKind::WasmtimeServe { .. } => "wasmtime",
            HostKind::WasmcloudHost { .. } => "wasmcloud-host",
            HostKind::Wash { .. } => "wash",
        }
    }
}

/// A host tool named by `$var`, else `name` found on the `PATH`; `None` when there is neither.
/// A bare name in `$var` is left for the `PATH`; a relative path is taken from the current
/// directory, else from the workspace root (`cargo test` runs a test in its package's
/// directory, while `WASMTIME=../shared/tools/wasmtime cargo test` is typed at the root).
/// A `$var` that names no file is a mistake to fix, not a tier to skip: it panics saying so.
fn tool_from_env(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let bin = PathBuf::from(path);
        if bin.components().count() == 1 {
            return Some(bin);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let found = [bin.clone(), root.join(&bin)]
            .into_iter()
            .find_map(|p| std::fs::canonicalize(p).ok().filter(|p| p.is_file()));
        return match found {
            Some(bin) => Some(bin),
            None => panic!(
                "${var}={} names no file (tried from {} and from the workspace root {}): \
                 set it to the {name} binary's path, or unset it to use `{name}` on the PATH",
                bin.display(),
                std::env::current_dir().unwrap_or_default().display(),
                std::fs::canonicalize(&root).unwrap_or(root).display(),
            ),
        };
    }
    let path = std::env::var_os("PATH")?;
    let bin = std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())?;
    Some(std::fs::canonicalize(&bin).unwrap_or(bin))
}

/// What to serve and how.
#[derive(Clone, Debug, Default)]
pub struct HostOptions {
    /// The app's `spin.toml`.
    pub manifest: PathBuf,
    /// Application variables (secrets go through `SPIN_VARIABLE_*`, the rest too: one path).
    pub variables: BTreeMap<String, String>,
    /// Spin runtime config (`--runtime-config-file`), e.g. a Redis key-value store.
    pub runtime_config: Option<PathBuf>,
    /// `--state-dir`: where the default SQLite key-value store and Spin's logs live.
    pub state_dir: PathBuf,
}

/// A running host process. Stopped (SIGTERM to its process group, then SIGKILL) on drop.
pub struct HostProcess {
    kind: HostKind,
    child: Child,
    url: String,
    addr: String,
    /// The `Host` header of requests (`None`: the address).
    host_header: Option<String>,
    output: Arc<Mutex<String>>,
    state_dir: PathBuf,
    /// What the host pulled its component from (a real wash), stopped after the host.
    registry: Option<OciRegistry>,
}

/// A workload for a real wasmCloud host ([`HostProcess::wash_host`]).
#[derive(Clone, Debug)]
pub struct WashWorkload<'a> {
    /// The component (exports `wasi:http/incoming-handler@0.2`).
    pub wasm: &'a Path,
    /// The component's config map (`localResources.config`), what it reads through
    /// `wasi:config/store`.
    pub config: &'a BTreeMap<String, String>,
    /// The NATS server (with JetStream) of the host's control plane and of its
    /// `wasi:keyvalue` buckets.
    pub nats_url: &'a str,
    /// Ports on the machine's loopback the component may reach as `host.wasmcloud.internal`
    /// (`localResources.allowedHostLoopbackPorts`; the host runs with `--allow-host-loopback`).
    pub host_loopback_ports: &'a [u16],
    /// `localResources.allowedHosts`, where its outbound `wasi:http` may go (`["*"]`:
    /// anywhere; `[]`: nowhere, as wash host treats a workload without the list).
    pub allowed_hosts: &'a [&'a str],
    /// The workload's name; also the `Host` header its HTTP requests are routed by.
    pub name: &'a str,
}

impl HostProcess {
    /// Starts `kind` serving `opts.manifest` and waits until it accepts connections.
    pub fn start(kind: &HostKind, opts: &HostOptions) -> Result<HostProcess> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = match kind {
            HostKind::WasmtimeServe { .. } => {
                bail!("wasmtime serves a .wasm, not a spin.toml: use HostProcess::wasmtime_serve")
            }
            HostKind::WasmcloudHost { .. } => {
                bail!("the wasmCloud-like host serves a .wasm: use HostProcess::wasmcloud_host")
            }
            HostKind::Wash { .. } => {
                bail!("wash host serves a workload: use HostProcess::wash_host")
            }
            HostKind::Devhost { bin, args } => {
                let mut c = Command::new(bin);
                c.arg("up").args(args);
                c
            }
            HostKind::Spin { bin } => {
                let mut c = Command::new(bin);
                c.arg("up");
                // Spin's own state (plugins, templates) out of the user's home.
                c.env("SPIN_DATA_DIR", opts.state_dir.join("spin-data"));
                c
            }
        };
        std::fs::create_dir_all(&opts.state_dir)?;
        cmd.arg("--from")
            .arg(&opts.manifest)
            .args(["--listen", &addr])
            .arg("--state-dir")
            .arg(&opts.state_dir);
        if let Some(rc) = &opts.runtime_config {
            cmd.arg("--runtime-config-file").arg(rc);
        }
        for (k, v) in &opts.variables {
            cmd.env(format!("SPIN_VARIABLE_{}", k.to_uppercase()), v);
        }
        HostProcess::spawn(kind, cmd, Some(addr), &opts.state_dir)
    }

    /// `wasmtime serve` of a standard-WASI component: `wasi:config` values from `config`,
    /// `wasi:keyvalue` (wasmtime's in-memory store), sockets with name lookup, and `args` before
    /// the component (e.g. `--max-instance-reuse-count 128`).
    pub fn wasmtime_serve(
        kind: &HostKind,
        wasm: &Path,
        config: &BTreeMap<String, String>,
        args: &[&str],
        state_dir: &Path,
    ) -> Result<HostProcess> {
        let HostKind::WasmtimeServe { bin } = kind else {
            bail!("not a wasmtime: {kind:?}");
        };
        std::fs::create_dir_all(state_dir)?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(["--addr", &addr])
            .args([
                "-S",
                "cli",
                "-S",
                "inherit-network",
                "-S",
                "allow-ip-name-lookup",
            ])
            .args(["-S", "config", "-S", "keyvalue"])
            .args(args)
            // Compiled code is cached by wasmtime: keep it out of the user's home.
            .env("HOME", state_dir);
        for (k, v) in config {
            if v.contains(',') {
                bail!("wasmtime's -S options cannot carry a `,` (config {k})");
            }
            cmd.arg("-S").arg(format!("config-var={k}={v}"));
        }
        cmd.arg(wasm);
        HostProcess::spawn(kind, cmd, Some(addr), state_dir)
    }

    /// A real wasmCloud host (`wash host`, wasmCloud 2.x) serving `workload.wasm`, driven as a
    /// cluster host is: the component is pushed to an OCI registry of the test's own on the
    /// loopback ([`OciRegistry`]); the host runs with
    ///
    /// ```text
    /// wash host --scheduler-nats-url URL --data-nats-url URL --host-name NAME
    ///     --http-addr 127.0.0.1:0 --allow-host-loopback --allow-insecure-registries
    ///     --oci-cache-dir <state dir>/oci-cache
    /// ```
    ///
    /// (`HOME` and the working directory in `state_dir`, so that no user or project config is
    /// read); once its first heartbeat (`runtime.operator.heartbeat.<id>`, matched by host
    /// name) gives its id and HTTP port, a workload start request (JSON, as the wasmCloud
    /// operator sends it) goes to `runtime.host.<id>.workload.start`: one component pulled by
    /// reference, `localResources.config` from `workload.config`, `allowedHosts`,
    /// `allowedHostLoopbackPorts`, and host interfaces `wasi:http/incoming-handler` (routed by
    /// the `Host` header `workload.name`), `wasi:keyvalue/store` (wash host's NATS JetStream
    /// buckets) and `wasi:config/store`. Returns once the workload runs and the port accepts
    /// connections; requests then carry `Host: <workload.name>`.
    pub fn wash_host(
        kind: &HostKind,
        workload: &WashWorkload<'_>,
        state_dir: &Path,
    ) -> Result<HostProcess> {
        let HostKind::Wash { bin } = kind else {
            bail!("not a wash: {kind:?}");
        };
        std::fs::create_dir_all(state_dir)?;
        let registry = OciRegistry::start()?;
        let wasm = std::fs::read(workload.wasm)
            .with_context(|| format!("reading {}", workload.wasm.display()))?;
        let image = registry.push(&format!("lakebase/{}", workload.name), "test", wasm)?;

        // Subscribed before the host starts: its first heartbeat comes at once, the next one
        // 15 s later.
        let mut nats = NatsClient::connect(workload.nats_url)?;
        let heartbeats = nats.subscribe("runtime.operator.heartbeat.*")?;
        nats.ping()?;
        static HOSTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let host_name = format!(
            "lakebase-test-{}-{}",
            std::process::id(),
            HOSTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut cmd = Command::new(bin);
        cmd.arg("host")
            .args(["--scheduler-nats-url", workload.nats_url])
            .args(["--data-nats-url", workload.nats_url])
            .args(["--host-name", &host_name])
            .args(["--http-addr", "127.0.0.1:0"])
            .arg("--allow-host-loopback")
            .arg("--allow-insecure-registries")
            .arg("--oci-cache-dir")
            .arg(state_dir.join("oci-cache"))
            .env("HOME", state_dir)
            .env("XDG_CONFIG_HOME", state_dir.join("config"))
            .env("XDG_CACHE_HOME", state_dir.join("cache"))
            .env("XDG_DATA_HOME", state_dir.join("data"))
            .current_dir(state_dir);
        let mut host = HostProcess::spawn_only(kind, cmd, state_dir)?;
        host.registry = Some(registry);

        // The heartbeat with our host name: the host's id and HTTP port.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (id, port) = loop {
            if let Some(status) = host.child.try_wait()? {
                bail!(
                    "wash exited ({status}) before its first heartbeat:\n{}",
                    host.logs()
                );
            }
            if Instant::now() > deadline {
                bail!("no heartbeat from wash within 60 s:\n{}", host.logs());
            }
            let Some(msg) = nats.next_message_within(Duration::from_millis(500))? else {
                continue;
            };
            if msg.sid != heartbeats {
                continue;
            }
            let beat: serde_json::Value = serde_json::from_slice(&msg.payload)
                .with_context(|| format!("a heartbeat not JSON: {:?}", msg.payload))?;
            if beat["hostname"] == host_name.as_str() {
                let id = beat["id"].as_str().context("a heartbeat without id")?;
                let port = beat["httpPort"]
                    .as_u64()
                    .filter(|p| *p != 0)
                    .with_context(|| format!("a heartbeat without an HTTP port: {beat}"))?;
                break (id.to_owned(), port);
            }
        };

        let component = serde_json::json!({
            "name": workload.name,
            "image": image,
            "imagePullPolicy": "IMAGE_PULL_POLICY_ALWAYS",
            "localResources": {
                "config": workload.config,
                // Absent, wash host denies every outbound wasi:http request ("outgoing request
                // denied by allowed_hosts policy"); the workspace is on the loopback.
                "allowedHosts": workload.allowed_hosts,
                "allowedHostLoopbackPorts":
                    workload.host_loopback_ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            },
        });
        let interface = |package: &str, interfaces: &[&str], config: serde_json::Value| {
            serde_json::json!({
                "namespace": "wasi",
                "package": package,
                "interfaces": interfaces,
                "config": config,
            })
        };
        let request = serde_json::json!({
            "workloadId": format!("{host_name}-{}", workload.name),
            "workload": {
                "namespace": "default",
                "name": workload.name,
                "witWorld": {
                    "components": [component],
                    "hostInterfaces": [
                        interface("http", &["incoming-handler"], serde_json::json!({"host": workload.name})),
                        interface("keyvalue", &["store"], serde_json::json!({})),
                        interface("config", &["store"], serde_json::json!({})),
                    ],
                },
            },
        });
        let reply = nats
            .request(
                &format!("runtime.host.{id}.workload.start"),
                &serde_json::to_vec(&request)?,
                Duration::from_secs(300),
            )
            .with_context(|| format!("starting the workload:\n{}", host.logs()))?;
        let reply: serde_json::Value = serde_json::from_slice(&reply)
            .with_context(|| format!("a workload start reply not JSON: {reply:?}"))?;
        let state = &reply["workloadStatus"]["workloadState"];
        if state != "WORKLOAD_STATE_RUNNING" {
            bail!("wash did not start the workload: {reply}\n{}", host.logs());
        }
        host.addr = format!("127.0.0.1:{port}");
        host.host_header = Some(workload.name.to_owned());
        host.wait_until_serving()?;
        Ok(host)
    }

    /// The wasmCloud-like test host (`wasmcloud-host`) serving a standard-WASI component: a new
    /// instance per request, `wasi:config` values from `config` (written to
    /// `<state_dir>/config.json`, the workload's config map), `wasi:keyvalue` on `keyvalue`
    /// (`nats://…` or `redis://…`), and `args` after those (e.g. `--cache-dir DIR`). The host
    /// binds port 0 and says where it serves.
    pub fn wasmcloud_host(
        kind: &HostKind,
        wasm: &Path,
        config: &BTreeMap<String, String>,
        keyvalue: &str,
        args: &[&str],
        state_dir: &Path,
    ) -> Result<HostProcess> {
        let HostKind::WasmcloudHost { bin } = kind else {
            bail!("not the wasmCloud-like host: {kind:?}");
        };
        std::fs::create_dir_all(state_dir)?;
        let config_file = state_dir.join("config.json");
        std::fs::write(&config_file, serde_json::to_string(config)?)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--component")
            .arg(wasm)
            .args(["--keyvalue", keyvalue, "--listen", "127.0.0.1:0"])
            .arg("--config")
            .arg(&config_file)
            .args(args);
        HostProcess::spawn(kind, cmd, None, state_dir)
    }

    /// Runs `cmd` (a host serving on `addr`, or, for `None`, one that prints `serving
    /// http://<addr>` once it does) in a process group of its own with its output captured, and
    /// waits until it accepts connections.
    fn spawn(
        kind: &HostKind,
        cmd: Command,
        addr: Option<String>,
        state_dir: &Path,
    ) -> Result<HostProcess> {
        let mut host = HostProcess::spawn_only(kind, cmd, state_dir)?;
        host.addr = addr.unwrap_or_default();
        host.wait_until_serving()?;
        Ok(host)
    }

    /// Runs `cmd` in a process group of its own with its output captured.
    fn spawn_only(kind: &HostKind, mut cmd: Command, state_dir: &Path) -> Result<HostProcess> {
        // Error strings handed to the guest would otherwise carry whole backtraces here.
        cmd.env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({kind:?})", kind.name()))?;
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stream);
                let mut line = String::new();
                while lines.read_line(&mut line).unwrap_or(0) > 0 {
                    output.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        }
        Ok(HostProcess {
            kind: kind.clone(),
            child,
            url: String::new(),
            addr: String::new(),
            host_header: None,
            output,
            state_dir: state_dir.to_owned(),
            registry: None,
        })
    }

    /// Waits until the host accepts connections on its address (an empty one: the address it
    /// prints, `serving http://<addr>`).
    fn wait_until_serving(&mut self) -> Result<()> {
        let announced = self.addr.is_empty();
        let host = self;
        let kind = host.kind.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if announced && host.addr.is_empty() {
                let said = host.output.lock().unwrap().lines().find_map(|l| {
                    l.split_once("serving http://")
                        .map(|(_, a)| a.trim().to_owned())
                });
                if let Some(a) = said {
                    host.addr = a;
                }
            }
            if !host.addr.is_empty() && TcpStream::connect(&host.addr).is_ok() {
                host.url = format!("http://{}", host.addr);
                return Ok(());
            }
            if let Some(status) = host.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before serving:\n{}",
                    kind.name(),
                    host.logs()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not serve within 60 s:\n{}",
                    kind.name(),
                    host.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which host this is.
    pub fn kind(&self) -> &HostKind {
        &self.kind
    }

    /// One request on a fresh connection (`Connection: close`, as the benchmarks need): the
    /// status and the body.
    pub fn request(&self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        s.set_nodelay(true)?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.host_header.as_deref().unwrap_or(&self.addr),
            body.len()
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("no HTTP response: {text:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status line: {head:?}"))?;
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
        });
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        Ok((status, body))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        self.request("GET", path, "")
    }

    /// Everything the host and its components printed: its stdout and stderr, and for Spin
    /// the component logs under `<state dir>/logs/`.
    pub fn logs(&self) -> String {
        let mut all = self.output.lock().unwrap().clone();
        if let Ok(entries) = std::fs::read_dir(self.state_dir.join("logs")) {
            let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                if let Ok(text) = std::fs::read_to_string(&p) {
                    all.push_str(&format!("\n--- {} ---\n{text}", p.display()));
                }
            }
        }
        all
    }

    /// The state directory (`--state-dir`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}
