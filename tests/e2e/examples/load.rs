//! The load command (not a test): the local stand-in stack (a throwaway PostgreSQL and the
//! emulated workspace), N host processes (the devhost or a real Spin) serving the notes app on
//! one key-value store (the SQLite file or a Redis server), M concurrent clients per process,
//! every request on a fresh connection. Prints one table row per host × store:
//! requests, errors by status, mints, OIDC calls, Postgres logins, p50/p95 latency.
//!
//! With `--ttl`, a soak across credential rotations: the login proxy's gauge of open database
//! sessions is sampled every second during the run, and a second table gives per host × store
//! the mints, the sessions open (most over the run, most in each rotation — from the start to
//! the second mint, then from mint to mint — and when the last client finished), and the p99
//! latency of requests that started within 2 s after a mint (the first mint, at the start,
//! included) against the p99 of the others. Sessions that grow with every rotation are pools
//! of old passwords kept open by the host.
//!
//! ```sh
//! ./scripts/load.sh                                     # devhost (+ spin if found), sqlite + redis
//! ./scripts/load.sh --hosts spin --stores redis --processes 4 --clients 16 --requests 1000
//! ./scripts/load.sh --ttl 20s --seconds 30              # short-lived tokens, a time budget
//! ./scripts/load.sh --flavour p2 --processes 4 --clients 16 --requests 1000   # the WASIp2 build
//! # the rotation soak: 5 rotations of a 60 s token, every request a query
//! ./scripts/load.sh --hosts devhost --stores sqlite --processes 2 --clients 8 --ttl 60s --seconds 300 --path /health
//! ```
//!
//! Latencies include the emulator's login proxy (a debug build unless run with `--release`), so
//! compare rows with each other, not with a real Lakebase.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lakebase_emulator::{
    Backend, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_ENDPOINT, Emulator, EmulatorOptions,
    LOGINS_ACCEPTED, LOGINS_REJECTED,
};
use lakebase_testkit::host::{HostKind, HostOptions, HostProcess};
use lakebase_testkit::load::{self, Budget, Rotations};
use lakebase_testkit::{PgCluster, RedisServer};

/// A request is "near a mint" when it started this soon after one.
const NEAR_MINT: Duration = Duration::from_secs(2);

const HELP: &str = "load: concurrent clients against N host processes serving the notes app.

USAGE: cargo run -p lakebase-e2e --example load -- [OPTIONS]   (or ./scripts/load.sh [OPTIONS])

OPTIONS:
  --hosts LIST       devhost, spin, wasmtime, comma-separated (default: devhost, and spin when
                     $SPIN or `spin` on the PATH is found). wasmtime serves the standard-WASI
                     build (examples/notes-wasi) with `wasmtime serve` ($WASMTIME or on the
                     PATH) and instance reuse; its store is wasmtime's in-memory one (`memory`)
  --stores LIST      sqlite, redis or both, for Spin and the devhost (default: sqlite,redis)
  --flavour LIST     p3, p2 or both: the notes app's build for Spin and the devhost, WASIp3
                     (spin.toml, Spin 4.1+) or WASIp2 (spin-p2.toml, Spin 3.4+) (default: p3)
  --processes N      host processes on one store (default 4)
  --clients M        concurrent clients per process (default 16)
  --requests R       requests in all (default 1000, or no cap with --seconds)
  --seconds S        stop after S seconds instead (with --requests, if given, as a cap)
  --ttl DUR          lifetime of minted database tokens, e.g. 20s or 1m (default 1h); also
                     prints the rotation table: mints, database sessions open (sampled every
                     second: most over the run, most per rotation, at the end) and the p99 of
                     requests started within 2 s after a mint against the p99 of the others
  --path PATH        the request (default /health, which runs a query on every request)

A rotation soak: --hosts devhost --stores sqlite --processes 2 --clients 8 --ttl 60s --seconds 300";

struct Args {
    hosts: Vec<HostKind>,
    stores: Vec<String>,
    flavours: Vec<String>,
    processes: usize,
    clients: usize,
    budget: Budget,
    ttl: Option<Duration>,
    path: String,
}

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .expect("the repository root")
}

fn devhost() -> HostKind {
    HostKind::Devhost {
        bin: root().join("target/debug/devhost"),
        args: vec![],
    }
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        hosts: vec![],
        stores: vec!["sqlite".into(), "redis".into()],
        flavours: vec!["p3".into()],
        processes: 4,
        clients: 16,
        budget: Budget::requests(1000),
        ttl: None,
        path: "/health".into(),
    };
    let mut hosts: Option<String> = None;
    let mut requests: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            "--hosts" => hosts = Some(value()?),
            "--stores" => a.stores = value()?.split(',').map(|s| s.trim().to_owned()).collect(),
            "--flavour" | "--flavours" => {
                a.flavours = value()?.split(',').map(|s| s.trim().to_owned()).collect()
            }
            "--processes" => a.processes = number(&flag, &value()?)?,
            "--clients" => a.clients = number(&flag, &value()?)?,
            "--requests" => requests = Some(number(&flag, &value()?)?),
            "--seconds" => {
                a.budget.time = Some(Duration::from_secs(number(&flag, &value()?)? as u64))
            }
            "--ttl" => {
                let v = value()?;
                let secs = v.strip_suffix('s').unwrap_or(&v);
                let secs = match secs.strip_suffix('m') {
                    Some(m) => number(&flag, m)? * 60,
                    None => number(&flag, secs)?,
                };
                a.ttl = Some(Duration::from_secs(secs as u64));
            }
            "--path" => a.path = value()?,
            other => bail!("unknown option `{other}` (see --help)"),
        }
    }
    a.budget.requests = match (requests, a.budget.time) {
        (Some(n), _) => n,
        (None, Some(time)) => Budget::time(time).requests,
        (None, None) => 1000,
    };
    for s in &a.stores {
        if s != "sqlite" && s != "redis" {
            bail!("--stores: `{s}` is neither sqlite nor redis");
        }
    }
    for f in &a.flavours {
        if f != "p3" && f != "p2" {
            bail!("--flavour: `{f}` is neither p3 (spin.toml) nor p2 (spin-p2.toml)");
        }
    }
    a.hosts = match hosts {
        None => {
            let mut v = vec![devhost()];
            match HostKind::spin_from_env() {
                Some(spin) => v.push(spin),
                None => {
                    eprintln!("load: no Spin found ($SPIN or `spin` on the PATH): devhost only")
                }
            }
            v
        }
        Some(list) => list
            .split(',')
            .map(|h| match h.trim() {
                "devhost" => Ok(devhost()),
                "spin" => HostKind::spin_from_env()
                    .context("--hosts spin: set $SPIN or put `spin` on the PATH"),
                "wasmtime" => HostKind::wasmtime_from_env()
                    .context("--hosts wasmtime: set $WASMTIME or put `wasmtime` on the PATH"),
                other => bail!("--hosts: `{other}` is not devhost, spin or wasmtime"),
            })
            .collect::<Result<_>>()?,
    };
    Ok(a)
}

fn number(flag: &str, s: &str) -> Result<usize> {
    s.parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .with_context(|| format!("{flag} `{s}`: expected a whole number above 0"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    for flavour in &args.flavours {
        let (package, file) = flavour_build(flavour);
        if !root()
            .join("target/wasm32-wasip2/release")
            .join(file)
            .exists()
        {
            bail!(
                "build the app first: cargo build --target wasm32-wasip2 --release -p {package} (scripts/load.sh does)"
            );
        }
    }
    let pg = PgCluster::start()?;
    let mut rows = Vec::new();
    let mut rotation_rows = Vec::new();
    let mut runs = Vec::new();
    for kind in &args.hosts {
        let wasi = matches!(kind, HostKind::WasmtimeServe { .. });
        // wasmtime serves the standard-WASI build: one run, whatever the flavours.
        let flavours = if wasi {
            vec!["wasi".to_owned()]
        } else {
            args.flavours.clone()
        };
        for flavour in flavours {
            runs.push((kind, flavour));
        }
    }
    for (kind, flavour) in runs {
        let wasi = matches!(kind, HostKind::WasmtimeServe { .. });
        let manifest = root().join(if flavour == "p2" {
            "spin-p2.toml"
        } else {
            "spin.toml"
        });
        let stores = if wasi {
            vec!["memory".to_owned()]
        } else {
            args.stores.clone()
        };
        for store in &stores {
            let mut opts = EmulatorOptions::new(Backend {
                host: pg.host().to_owned(),
                port: pg.port(),
                admin_user: pg.superuser().to_owned(),
                admin_password: pg.superuser_password().to_owned(),
            });
            if let Some(ttl) = args.ttl {
                opts.db_token_ttl = ttl;
            }
            let emu = Emulator::start(opts).await?;
            let variables: BTreeMap<String, String> = [
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
            .collect();
            let dir = std::env::temp_dir().join(format!(
                "lakebase-load-{}-{flavour}-{store}-{}",
                kind.name(),
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let redis = if store == "redis" {
                Some(RedisServer::start()?)
            } else {
                None
            };
            let runtime_config = match &redis {
                Some(r) => {
                    let path = dir.join("runtime-config.toml");
                    std::fs::write(
                        &path,
                        format!(
                            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
                            r.url()
                        ),
                    )?;
                    Some(path)
                }
                None => None,
            };
            let nodes = (0..args.processes)
                .map(|i| {
                    if wasi {
                        let wasm =
                            root().join("target/wasm32-wasip2/release/lakebase_notes_wasi.wasm");
                        let reuse = ["--max-instance-reuse-count", "128"];
                        return HostProcess::wasmtime_serve(
                            kind,
                            &wasm,
                            &variables,
                            &reuse,
                            &dir.join(format!("p{i}")),
                        );
                    }
                    HostProcess::start(
                        kind,
                        &HostOptions {
                            manifest: manifest.clone(),
                            variables: variables.clone(),
                            runtime_config: runtime_config.clone(),
                            // SQLite: one state directory, so every process opens the same file.
                            state_dir: if redis.is_some() {
                                dir.join(format!("p{i}"))
                            } else {
                                dir.clone()
                            },
                        },
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            emu.reset_sessions_max();
            let report = tokio::task::block_in_place(|| {
                let r =
                    load::run_with_gauge(&nodes, args.clients, args.budget, &args.path, &|| {
                        emu.sessions_open()
                    });
                drop(nodes);
                r
            });
            let rotations = report.rotations(&emu.mint_times(), NEAR_MINT);
            rotation_rows.push(rotation_row(kind.name(), &flavour, store, &rotations));
            rows.push(format!(
                "| {} | {flavour} | {store} | {} × {} | {} | {} | {} | {} | {} (+{} rejected) | {:.1} | {:.1} |",
                kind.name(),
                args.processes,
                args.clients,
                report.requests(),
                if report.errors() == 0 {
                    "0".to_owned()
                } else {
                    format!("{} ({})", report.errors(), report.statuses_text())
                },
                emu.mints(),
                emu.count("POST /oidc/v1/token"),
                emu.count(LOGINS_ACCEPTED),
                emu.count(LOGINS_REJECTED),
                report.percentile(50.0).as_secs_f64() * 1000.0,
                report.percentile(95.0).as_secs_f64() * 1000.0,
            ));
            for f in &report.failures {
                eprintln!("load: {} {store}: {f}", kind.name());
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    println!(
        "| host | build | store | processes × clients | requests | errors | mints | OIDC calls | Postgres logins | p50 ms | p95 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    if args.ttl.is_some() {
        println!();
        println!(
            "| host | build | store | mints | sessions open, most | most per rotation | at the end | p99 ms, ≤ 2 s after a mint (requests) | p99 ms, others (requests) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for r in rotation_rows {
            println!("{r}");
        }
    }
    Ok(())
}

/// The package and `.wasm` of a flavour's build.
fn flavour_build(flavour: &str) -> (&'static str, &'static str) {
    match flavour {
        "p2" => ("lakebase-notes-p2", "lakebase_notes_p2.wasm"),
        _ => ("lakebase-notes", "lakebase_notes.wasm"),
    }
}

/// A row of the rotation table.
fn rotation_row(host: &str, build: &str, store: &str, r: &Rotations) -> String {
    let per_rotation = r
        .sessions_max_per_rotation
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" → ");
    format!(
        "| {host} | {build} | {store} | {} | {} | {per_rotation} | {} | {:.1} ({}) | {:.1} ({}) |",
        r.mints,
        r.sessions_max,
        r.sessions_end,
        r.p99_near_mint.as_secs_f64() * 1000.0,
        r.near_mint,
        r.p99_others.as_secs_f64() * 1000.0,
        r.others,
    )
}
