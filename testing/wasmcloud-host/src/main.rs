//! `wasmcloud-host`: serves one `wasi:http@0.2` component as wasmCloud 2.7's host does (see the
//! library's docs and README.md).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use lakebase_wasmcloud_host::{AllowedHost, HostOptions, KeyValue, WasmcloudHost};

const HELP: &str = "wasmcloud-host: serve a wasi:http@0.2 component as wasmCloud 2.7's host does
(a new instance per request; a test model, not wash).

USAGE: wasmcloud-host --component FILE.wasm --keyvalue URL [--config FILE.json] [--listen ADDR]
                      [--cache-dir DIR] [--allowed-hosts JSON]

OPTIONS:
      --component FILE     the component (exports wasi:http/incoming-handler@0.2)
      --keyvalue URL       wasi:keyvalue's backend: nats://host:port (JetStream) or redis://host:port
      --config FILE        the workload's config map for wasi:config, a JSON object of strings
      --listen ADDR        address to serve on (default 127.0.0.1:0, a free port)
      --cache-dir DIR      keep wasmtime's compiled code here between runs
      --allowed-hosts JSON the workload's allowedHosts for outbound wasi:http, e.g. '[\"*\"]' or
                           '[\"https://*.cloud.databricks.com\"]'; '[]' denies all (a wash host
                           workload without the list); not given: anywhere (as wash dev)
  -h, --help               this help

Prints `wasmcloud-host: serving http://ADDR` on stdout once it accepts connections; one line per
request on stderr; the component's stdout and stderr are passed through.";

#[tokio::main]
async fn main() -> Result<()> {
    let mut component = None;
    let mut keyvalue = None;
    let mut config = BTreeMap::new();
    let mut listen: SocketAddr = "127.0.0.1:0".parse()?;
    let mut cache_dir = None;
    let mut allowed_hosts = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--component" => component = Some(PathBuf::from(value("--component")?)),
            "--keyvalue" => keyvalue = Some(value("--keyvalue")?),
            "--cache-dir" => cache_dir = Some(PathBuf::from(value("--cache-dir")?)),
            "--config" => {
                let path = value("--config")?;
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the config map {path}"))?;
                config = serde_json::from_str(&text).with_context(|| {
                    format!("the config map {path}: expected a JSON object of strings")
                })?;
            }
            "--allowed-hosts" => {
                let v = value("--allowed-hosts")?;
                let list: Vec<String> = serde_json::from_str(&v).with_context(|| {
                    format!("--allowed-hosts `{v}`: expected a JSON list of strings")
                })?;
                allowed_hosts = Some(
                    list.iter()
                        .map(|e| AllowedHost::parse(e))
                        .collect::<Result<Vec<_>>>()?,
                );
            }
            "--listen" => {
                let v = value("--listen")?;
                listen = v.parse().with_context(|| format!("--listen `{v}`"))?;
            }
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(());
            }
            other => bail!("unknown argument `{other}`\n\n{HELP}"),
        }
    }
    let component = component.context("--component is required")?;
    let url = keyvalue.context("--keyvalue is required (nats://… or redis://…)")?;
    let keyvalue = KeyValue::connect(&url).await?;
    let host = WasmcloudHost::load(HostOptions {
        component,
        config,
        keyvalue,
        cache_dir,
        allowed_hosts,
    })?;
    let (addr, task) = host.serve(listen).await?;
    println!("wasmcloud-host: serving http://{addr}");
    std::io::stdout().flush()?;
    task.await?;
    Ok(())
}
