//! A workspace outage (503, and hung) from 60 % to 92 % of a credential's life, on the Spin
//! hosts: the WASIp2 app on the devhost as Spin 3.6.3 (a fresh instance per request, as Spin
//! serves WASIp2 components from 3.4 to 4.0.x and SpinKube does) and the WASIp3 app on the
//! devhost as Spin 4.1 (instances reused, the refresh ahead after the response), and on a real
//! Spin where one is found. The scenario is [`lakebase_e2e::outage`]; the wasmCloud hosts run the
//! same in `wasmcloud.rs`. Each run takes about a credential's life (60 s; `OUTAGE_TTL_SECS`),
//! the 503 and the hung run side by side.

use lakebase_e2e::outage::{self, Down};
use lakebase_e2e::{Flavour, Upstream, app_wasm, hosts_for, notes_p2_wasm, repo_root, temp_dir};
use lakebase_testkit::host::{HostKind, HostOptions, HostProcess};

async fn outage_on(flavour: Flavour, manifest: &str) {
    match flavour {
        Flavour::P2 => notes_p2_wasm(),
        Flavour::P3 => app_wasm(),
    };
    let mut reports = vec![];
    for kind in hosts_for(flavour) {
        let name = format!("{} ({flavour:?})", kind.name());
        let mut runs = vec![];
        for down in [Down::Status503, Down::Hung] {
            let up = Upstream::start().await;
            up.emu.set_db_token_ttl(outage::ttl());
            let host = start(&kind, manifest, &up, &format!("outage-{}", down.name()));
            runs.push((down, up, host));
        }
        let runs: Vec<_> = runs.iter().map(|(d, up, host)| (*d, up, host)).collect();
        let done = outage::run_side_by_side(&name, &runs);
        reports.extend(done);
    }
    outage::print_table(&reports);
}

fn start(kind: &HostKind, manifest: &str, up: &Upstream, tag: &str) -> HostProcess {
    HostProcess::start(
        kind,
        &HostOptions {
            manifest: repo_root().join(manifest),
            variables: up.variables(),
            runtime_config: None,
            state_dir: temp_dir(tag),
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e:#}", kind.name()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_outage_on_fresh_wasip2_instances_fails_no_request() {
    outage_on(Flavour::P2, "spin-p2.toml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_outage_on_spin_4_1_fails_no_request() {
    outage_on(Flavour::P3, "spin.toml").await;
}
