//! Benchmark of the plugin: median request time through the devhost's HTTP server, each request
//! on a fresh TCP connection (`Connection: close`; keep-alive showed a delayed-ACK artefact on
//! these machines), for the same consumer component:
//!
//! - `direct`: the consumer alone, opening the login proxy with a connection string that holds
//!   a token minted beforehand;
//! - `plugin pass-through`: the consumer composed with the plugin, same connection string (the
//!   plugin forwards it untouched);
//! - `plugin lakebase:`: the consumer composed with the plugin, address `lakebase:` (cached
//!   credential, then the same host connection);
//! - phase `static`: one handler (`tests/bench-handler`) running `SELECT 1` through a fixed
//!   connection string (`/static`) and through the library (`/library`, `lakebase_spin::spin::
//!   connect`): the library's cost over a static-password handler, same component and instance.
//!
//! All three log in through the emulator's login proxy to the same PostgreSQL, so the plugin is
//! the only difference. Run from the repository root:
//!
//! ```sh
//! cargo run -p lakebase-e2e --profile bench-host --example plugin_bench            # 200 requests per row
//! cargo run -p lakebase-e2e --profile bench-host --example plugin_bench -- 500      # more
//! cargo run -p lakebase-e2e --profile bench-host --example plugin_bench -- 500 SELECT   # SELECT 1 only
//! cargo run -p lakebase-e2e --profile bench-host --example plugin_bench -- 500 static   # library vs static only
//! # against another build of the plugin, in the same run (two more rows per phase):
//! PLUGIN_BENCH_BASELINE=/tmp/old/lakebase_plugin.wasm cargo run -p lakebase-e2e --profile bench-host --example plugin_bench -- 500
//! ```
//!
//! On a shared 2-vCPU machine, run the built binary on one CPU
//! (`taskset -c 1 target/bench-host/examples/plugin_bench 2000 SELECT`): spread over two, each
//! database session's latency depends for seconds at a time on which vCPU its processes and
//! tasks landed on (a `SELECT 1` through the same code took 0.2 ms in one session and 0.45 ms in
//! another, in the same run), which swamps differences of a few per cent between rows; on one
//! CPU, medians repeat within about 1 %.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use lakebase_devhost::{Devhost, DevhostOptions};
use lakebase_emulator::{
    Backend, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_ENDPOINT, Emulator, EmulatorOptions,
};
use lakebase_testkit::PgCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .expect("the repository root")
}

/// One HTTP/1.1 exchange on a fresh connection: status and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked bodies: good enough to find the JSON inside for the checks below.
    Ok((status, body.to_owned()))
}

/// A database token minted through the emulator's real HTTP API, as the plugin would.
async fn mint_token(emu: &Emulator) -> Result<String> {
    let addr: SocketAddr = emu.http_url().trim_start_matches("http://").parse()?;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}"));
    let (status, body) = http(
        addr,
        "POST",
        "/oidc/v1/token",
        &format!(
            "authorization: Basic {basic}\r\ncontent-type: application/x-www-form-urlencoded\r\n"
        ),
        "grant_type=client_credentials&scope=all-apis",
    )
    .await?;
    if status != 200 {
        bail!("oidc token: {status}");
    }
    let workspace: serde_json::Value = serde_json::from_str(&body)?;
    let ws = workspace["access_token"].as_str().context("access_token")?;
    let (status, body) = http(
        addr,
        "POST",
        "/api/2.0/postgres/credentials",
        &format!("authorization: Bearer {ws}\r\ncontent-type: application/json\r\n"),
        &serde_json::json!({ "endpoint": DEFAULT_ENDPOINT }).to_string(),
    )
    .await?;
    if status != 200 {
        bail!("credential: {status}");
    }
    let cred: serde_json::Value = serde_json::from_str(&body)?;
    Ok(cred["token"].as_str().context("token")?.to_owned())
}

fn build_wasm() -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--target", "wasm32-wasip2", "--release"])
        .args([
            "-p",
            "lakebase-pg-consumer",
            "-p",
            "lakebase-plugin",
            "-p",
            "lakebase-notes",
        ])
        .current_dir(root())
        .status()?;
    if !status.success() {
        bail!("building the components failed");
    }
    Ok(())
}

/// The consumer's manifest, with the plugin at `plugin` or without one, written beside a state
/// directory.
fn manifest(dir: &Path, plugin: Option<&Path>) -> Result<PathBuf> {
    let mut text = std::fs::read_to_string(root().join("tests/pg-consumer/spin.toml"))?;
    let built = "../../target/wasm32-wasip2/release/lakebase_plugin.wasm";
    match plugin {
        Some(plugin) => text = text.replace(built, &plugin.display().to_string()),
        None => {
            let start = text
                .find("[component.consumer.dependencies]")
                .context("dependencies table")?;
            let end = text[start..]
                .find("\n\n")
                .map(|n| start + n)
                .context("end of table")?;
            text.replace_range(start..end, "");
        }
    }
    write_manifest(dir, &text)
}

/// The bench handler's manifest, written into `dir`.
fn bench_handler_manifest(dir: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(root().join("tests/bench-handler/spin.toml"))?;
    write_manifest(dir, &text)
}

/// Writes a fixture's manifest text into `dir` as `spin.toml`, its `.wasm` paths made absolute.
fn write_manifest(dir: &Path, text: &str) -> Result<PathBuf> {
    let target = root().join("target/wasm32-wasip2/release");
    let text = text.replace(
        "../../target/wasm32-wasip2/release",
        &target.display().to_string(),
    );
    std::fs::create_dir_all(dir)?;
    let path = dir.join("spin.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn quantile(v: &[Duration], q: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

struct Row {
    name: String,
    path: String,
    host: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200);
    // Further arguments pick phases by name: `SELECT`, `rows` or `static` (default: all).
    let only: Vec<String> = std::env::args().skip(2).collect();
    build_wasm()?;
    let pg = PgCluster::start()?;
    let emu = Emulator::start(EmulatorOptions::new(Backend {
        host: pg.host().to_owned(),
        port: pg.port(),
        admin_user: pg.superuser().to_owned(),
        admin_password: pg.superuser_password().to_owned(),
    }))
    .await?;
    let token = mint_token(&emu).await?;
    let proxy = emu.pg_addr();
    let direct = format!(
        "postgres://{}:{}@{}:{}/databricks_postgres?sslmode=disable",
        DEFAULT_CLIENT_ID,
        percent_encode(&token),
        proxy.ip(),
        proxy.port()
    );
    let vars: HashMap<String, String> = [
        ("databricks_host", emu.http_url()),
        ("databricks_client_id", DEFAULT_CLIENT_ID.to_owned()),
        ("databricks_client_secret", DEFAULT_CLIENT_SECRET.to_owned()),
        ("lakebase_endpoint", DEFAULT_ENDPOINT.to_owned()),
        ("pghost", proxy.ip().to_string()),
        ("pgport", proxy.port().to_string()),
        ("pgsslmode", "disable".to_owned()),
        ("direct_address", direct),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let scratch = std::env::temp_dir().join(format!("lakebase-bench-{}", std::process::id()));
    // Another build of the plugin to compare with, in the same run (`PLUGIN_BENCH_BASELINE`: the
    // path of its .wasm): two more rows per phase.
    let baseline = std::env::var_os("PLUGIN_BENCH_BASELINE").map(PathBuf::from);
    let plugin = root().join("target/wasm32-wasip2/release/lakebase_plugin.wasm");
    let mut setups = vec![("direct", None), ("plugin", Some(plugin.as_path()))];
    if let Some(b) = &baseline {
        setups.push(("baseline", Some(b.as_path())));
    }
    let mut servers = Vec::new();
    let mut hosts = Vec::new();
    let mut manifests = Vec::new();
    for (name, plugin) in &setups {
        manifests.push(manifest(&scratch.join(name), *plugin)?);
    }
    // The bench handler (the library linked into the handler itself), the last host.
    manifests.push(bench_handler_manifest(&scratch.join("handler"))?);
    let handler_host = manifests.len() - 1;
    for (i, manifest) in manifests.into_iter().enumerate() {
        let dir = manifest.parent().context("manifest dir")?.to_owned();
        let mut variables = vars.clone();
        if i == handler_host {
            // The consumer's own variable; the handler has none such.
            variables.remove("direct_address");
        }
        let host = Devhost::load(DevhostOptions {
            manifest,
            state_dir: Some(dir.join(".spin")),
            variables,
            env: Some(HashMap::new()),
            ..Default::default()
        })?;
        servers.push(host.serve("127.0.0.1:0".parse()?).await?);
        hosts.push(host);
    }
    let mut variants = vec![
        ("direct", 0, "via=direct"),
        ("plugin pass-through", 1, "via=direct"),
        ("plugin lakebase:", 1, "via=lakebase"),
    ];
    if baseline.is_some() {
        variants.push(("baseline plugin pass-through", 2, "via=direct"));
        variants.push(("baseline plugin lakebase:", 2, "via=lakebase"));
    }
    let wanted = |phase: &str| only.is_empty() || only.iter().any(|o| phase.contains(o.as_str()));
    let mut phases: Vec<Vec<Row>> = [
        ("SELECT 1", "/select1?"),
        ("5,000 rows", "/rows?n=5000&width=100&"),
    ]
    .into_iter()
    .filter(|(phase, _)| wanted(phase))
    .map(|(phase, path)| {
        variants
            .iter()
            .map(|(variant, host, via)| Row {
                name: format!("{phase}, {variant}"),
                path: format!("{path}{via}"),
                host: *host,
            })
            .collect()
    })
    .collect();
    // The library against a static password: one handler, the same `SELECT 1`, its two routes
    // differing only in how the connection is opened.
    if wanted("static") {
        let row = |name: &str, path: &str| Row {
            name: format!("SELECT 1 in one handler, {name}"),
            path: path.to_owned(),
            host: handler_host,
        };
        phases.push(vec![
            row("static connection string", "/static"),
            row("lakebase-spin library", "/library"),
        ]);
    }
    // Each query kind is its own phase (a 5,000-row request just before a SELECT 1 would slow
    // the latter). Within a phase, after a warm-up of every row (pools, compiled code, the cached
    // credential), the rows alternate request by request, and the order rotates every round, so
    // that each row follows each other row equally often and drifts of a shared machine hit
    // them all alike.
    let mut times: Vec<Vec<Vec<Duration>>> = phases
        .iter()
        .map(|rows| vec![Vec::with_capacity(n); rows.len()])
        .collect();
    for (rows, times) in phases.iter().zip(&mut times) {
        let k = rows.len();
        for round in 0..n + 20 {
            for j in 0..k {
                let i = (round + j) % k;
                let row = &rows[i];
                let addr = servers[row.host].local_addr();
                let start = Instant::now();
                let (status, body) = http(addr, "GET", &row.path, "", "").await?;
                let elapsed = start.elapsed();
                if status != 200 {
                    bail!("{}: {status} {body}", row.name);
                }
                if round >= 20 {
                    times[i].push(elapsed);
                }
            }
        }
    }
    let mints = emu.mints();
    println!(
        "\nplugin benchmark: {n} requests per row, fresh TCP connection each, rows alternating"
    );
    println!("| request | p25 | median | p75 | median ratio to direct |");
    println!("|---|---:|---:|---:|---:|");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (rows, times) in phases.iter().zip(&times) {
        let base = quantile(&times[0], 0.5);
        for (row, t) in rows.iter().zip(times) {
            let m = quantile(t, 0.5);
            println!(
                "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.3}x |",
                row.name,
                ms(quantile(t, 0.25)),
                ms(m),
                ms(quantile(t, 0.75)),
                m.as_secs_f64() / base.as_secs_f64()
            );
        }
    }
    println!("\ndatabase credentials minted during the run: {mints} (1 by the benchmark itself)");
    drop(servers);
    drop(hosts);
    // Instances idle out after 1 s (Spin's default); dropped earlier, with the runtime, their
    // workers would be reported as failed instances.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
