//! `devhost up`: runs a Spin app locally, mirroring `spin up`'s command line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lakebase_devhost::{Devhost, DevhostOptions, InstanceReuse};

fn count(flag: &str, s: &str) -> Result<usize> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => bail!("{flag} `{s}`: expected a whole number of at least 1"),
    }
}

const HELP: &str = "devhost: run a Spin app locally as Spin 4.1 (or an older release, --spin-version) does (a stand-in for `spin up`, built on wasmtime 47).

USAGE: devhost up [OPTIONS]
       devhost compose [-f PATH] -o OUT.wasm

`compose` writes the app component with its [component.<id>.dependencies] plugged in, as `up`
runs it: for hosts without component dependencies (the same result as `wac plug`).

OPTIONS:
  -f, --from PATH               spin.toml, or the directory holding it (default: .)
      --listen ADDR             address to serve on (default 127.0.0.1:3000)
      --state-dir DIR           where the default key-value store lives (default .spin)
      --variable NAME=VALUE     set an application variable (repeatable); SPIN_VARIABLE_<NAME> works too
      --runtime-config-file F   Spin runtime config ([key_value_store.<label>] type = \"spin\" | \"redis\")
      --clock-offset DUR        shift the guest's wall clock, e.g. 46m, 90s, 2h
      --max-instance-reuse-count N
                                requests one instance serves (Spin's default: 128)
      --max-instance-concurrent-reuse-count N
                                requests one instance runs at once (Spin's default: 16)
      --idle-instance-timeout DUR
                                drop an instance idle this long (Spin's default: 1s)
      --fresh-instances         a new instance per request (same as both counts 1)
      --spin-version X.Y.Z      model that Spin release (default 4.1.0): Spin 3.x refuses a
                                dependency's own inherit_configuration; before 4.1 no WASIp3
                                component loads; 4.0.0-4.0.2 imply --empty-query-hangs
      --empty-query-hangs       as Spin 4.0.0 to 4.0.2: a synchronous spin:postgres query that
                                matches no rows never returns (spinframework/spin#3671)
      --deny-adapter PATH       the .wasm that denies Spin interfaces to dependencies that do not
                                inherit configuration (default: the workspace's build of
                                testing/deny-adapter)
  -h, --help                    this help";

fn parse_duration(s: &str) -> Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid duration `{s}`"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => bail!("invalid duration `{s}`: use e.g. 90s, 46m, 2h"),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    match args.next().as_deref() {
        Some("up") => {}
        Some("compose") => return compose(args.collect()),
        Some("-h" | "--help") | None => {
            println!("{HELP}");
            return Ok(());
        }
        Some(other) => bail!("unknown command `{other}`: try `devhost up --help`"),
    }
    let mut opts = DevhostOptions {
        manifest: PathBuf::from("."),
        ..Default::default()
    };
    let mut listen = "127.0.0.1:3000".to_owned();
    let mut variables = HashMap::new();
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(());
            }
            "-f" | "--from" => opts.manifest = PathBuf::from(value()?),
            "--listen" => listen = value()?,
            "--state-dir" => opts.state_dir = Some(PathBuf::from(value()?)),
            "--variable" => {
                let v = value()?;
                let (k, val) = v
                    .split_once('=')
                    .with_context(|| format!("--variable `{v}`: expected NAME=VALUE"))?;
                variables.insert(k.to_owned(), val.to_owned());
            }
            "--runtime-config-file" => opts.runtime_config = Some(PathBuf::from(value()?)),
            "--clock-offset" => opts.clock_offset = parse_duration(&value()?)?,
            "--deny-adapter" => opts.deny_adapter = Some(PathBuf::from(value()?)),
            "--max-instance-reuse-count" => opts.reuse.max_requests = count(&a, &value()?)?,
            "--max-instance-concurrent-reuse-count" => {
                opts.reuse.max_concurrent = count(&a, &value()?)?
            }
            "--idle-instance-timeout" => opts.reuse.idle_timeout = parse_duration(&value()?)?,
            "--fresh-instances" => opts.reuse = InstanceReuse::FRESH,
            "--empty-query-hangs" => opts.empty_query_hangs = true,
            "--spin-version" => {
                opts.spin_version = lakebase_devhost::SpinVersion::parse(&value()?)?
            }
            other => bail!("unknown option `{other}` (see devhost up --help)"),
        }
    }
    opts.variables = variables;
    let host = Devhost::load(opts)?;
    let server = host
        .serve(
            listen
                .parse()
                .with_context(|| format!("--listen `{listen}`"))?,
        )
        .await?;
    println!("Serving http://{}", server.local_addr());
    println!(
        "Available Routes:\n  {}: http://{}{}",
        host.component_id(),
        server.local_addr(),
        host.route().trim_end_matches("/...")
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// `devhost compose [-f PATH] [--deny-adapter PATH] -o OUT`.
fn compose(args: Vec<String>) -> Result<()> {
    let mut manifest = PathBuf::from(".");
    let mut out = None;
    let mut deny_adapter = lakebase_devhost::compose::default_deny_adapter_path();
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(());
            }
            "-f" | "--from" => manifest = PathBuf::from(value()?),
            "-o" | "--output" => out = Some(PathBuf::from(value()?)),
            "--deny-adapter" => deny_adapter = PathBuf::from(value()?),
            other => bail!("unknown option `{other}` (see devhost --help)"),
        }
    }
    let out = out.context("devhost compose needs -o OUT.wasm")?;
    let app = lakebase_devhost::manifest::App::load(&manifest)?;
    let wasm = std::fs::read(&app.source)
        .with_context(|| format!("reading {} (build it first)", app.source.display()))?;
    let composed =
        lakebase_devhost::compose::compose(&app.component_id, wasm, &app.dependencies, || {
            std::fs::read(&deny_adapter)
                .with_context(|| format!("reading the deny adapter {}", deny_adapter.display()))
        })?;
    std::fs::write(&out, &composed).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{}: {} with {} dependenc{} plugged in, {} bytes",
        out.display(),
        app.component_id,
        app.dependencies.len(),
        if app.dependencies.len() == 1 {
            "y"
        } else {
            "ies"
        },
        composed.len()
    );
    Ok(())
}
