//! A Spin app served by a host process: the devhost (`devhost up`) or a real Spin (`spin up`),
//! or a standard-WASI component on `wasmtime serve` or the wasmCloud-like test host, on a free
//! loopback port, with its logs captured, stopped on drop. The end-to-end scenarios
//! and the load command take a [`HostKind`] so that the same scenario runs on both.

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
}

impl HostKind {
    /// The real Spin to test with: `$SPIN` if set, else `spin` on the `PATH`; `None` when
    /// there is neither.
    pub fn spin_from_env() -> Option<HostKind> {
        if let Some(path) = std::env::var_os("SPIN").filter(|p| !p.is_empty()) {
            let bin = PathBuf::from(path);
            let bin = if bin.is_relative() && bin.components().count() > 1 {
                std::env::current_dir().map(|d| d.join(&bin)).unwrap_or(bin)
            } else {
                bin
            };
            return Some(HostKind::Spin { bin });
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("spin"))
            .find(|p| p.is_file())
            .map(|bin| HostKind::Spin { bin })
    }

    /// The `wasmtime` to serve the standard-WASI build with: `$WASMTIME` if set, else
    /// `wasmtime` on the `PATH`; `None` when there is neither.
    pub fn wasmtime_from_env() -> Option<HostKind> {
        let bin = match std::env::var_os("WASMTIME").filter(|p| !p.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => {
                let path = std::env::var_os("PATH")?;
                std::env::split_paths(&path)
                    .map(|d| d.join("wasmtime"))
                    .find(|p| p.is_file())?
            }
        };
        let bin = std::fs::canonicalize(&bin).unwrap_or(bin);
        Some(HostKind::WasmtimeServe { bin })
    }

    /// `"devhost"`, `"spin"`, `"wasmtime"` or `"wasmcloud-host"`.
    pub fn name(&self) -> &'static str {
        match self {
            HostKind::Devhost { .. } => "devhost",
            HostKind::Spin { .. } => "spin",
            HostKind::WasmtimeServe { .. } => "wasmtime",
            HostKind::WasmcloudHost { .. } => "wasmcloud-host",
        }
    }
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
    output: Arc<Mutex<String>>,
    state_dir: PathBuf,
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
        mut cmd: Command,
        addr: Option<String>,
        state_dir: &Path,
    ) -> Result<HostProcess> {
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
        let announced = addr.is_none();
        let mut host = HostProcess {
            kind: kind.clone(),
            child,
            url: String::new(),
            addr: addr.unwrap_or_default(),
            output,
            state_dir: state_dir.to_owned(),
        };
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
                return Ok(host);
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
            self.addr,
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
