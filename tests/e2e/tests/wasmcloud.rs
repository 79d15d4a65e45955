//! The wasmCloud tiers: the standard-WASI notes app (`examples/notes-wasi`) and a
//! `wasmcloud:postgres` component plugged with the WASI plugin, against the emulator and a real
//! PostgreSQL behind its TLS login proxy, on two hosts: the wasmCloud-like test host
//! (`testing/wasmcloud-host`: a new instance for every request, as wash 2.7 does for
//! `wasi:http@0.2`), with `wasi:keyvalue` on a real NATS JetStream server or a real Redis, and,
//! where one is found (`$WASH`, else `wash` on the PATH), a real wasmCloud host, `wash host`
//! ([`HostProcess::wash_host`]: the component pulled from an OCI registry of the test's own, the
//! workload started over NATS, `wasi:keyvalue` on wash's NATS JetStream buckets, the login
//! proxy reached as `host.wasmcloud.internal` through `--allow-host-loopback`). Each scenario is
//! written once and runs on every tier ([`Tier`]).
//!
//! Instance memory never outlives a request here, so everything the cache saves comes through
//! the key-value store: one mint for many requests, and for several host processes on one store.
//! The NATS scenarios need a `nats-server` with JetStream (`$NATS_SERVER`, the one
//! `scripts/test.sh` installs into `target/nats-server-venv`, or one on the PATH); without one
//! they say `wasmCloud-like NATS tier NOT run` and pass. Without a wash every test says
//! `wasmCloud (wash) tier NOT run` and passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lakebase_e2e::{
    CREDENTIAL_ROUTE, TOKEN_ROUTE, Upstream, nats_tier, notes_wasi_wasm, repo_root, temp_dir,
    wash_tier, wasi_plugin_wasm, wasmcloud_consumer_wasm, wasmcloud_host,
};
use lakebase_emulator::{DEFAULT_CLIENT_ID, Fault, FaultKind, LOGINS_ACCEPTED};
use lakebase_testkit::host::{HostKind, HostProcess, WashWorkload};
use lakebase_testkit::{NatsServer, RedisServer};
use serde_json::Value;

/// A host the scenarios run on.
enum Tier {
    /// The wasmCloud-like test host (`testing/wasmcloud-host`).
    Model(HostKind),
    /// A real wasmCloud host (`wash host`).
    Wash(HostKind),
}

impl Tier {
    /// The wasmCloud-like host, and a real wash when one is found (said when not, for `what`).
    fn all(what: &str) -> Vec<Tier> {
        let mut tiers = vec![Tier::Model(wasmcloud_host())];
        tiers.extend(wash_tier(what).map(Tier::Wash));
        tiers
    }

    fn name(&self) -> &'static str {
        match self {
            Tier::Model(_) => "wasmCloud-like host",
            Tier::Wash(_) => "wash",
        }
    }

    fn is_wash(&self) -> bool {
        matches!(self, Tier::Wash(_))
    }

    /// The `wasi:config` values of [`Upstream::start_wasi`] as this host's guest needs them:
    /// in wash, the machine's loopback (where the login proxy listens) is
    /// `host.wasmcloud.internal` (`localhost` is the guest's own); the proxy's certificate
    /// names both.
    fn config(&self, config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut config = config.clone();
        if self.is_wash() {
            config.insert("pghost".to_owned(), "host.wasmcloud.internal".to_owned());
        }
        config
    }

    /// The host serving `wasm` with `config` (as [`Tier::config`] made it) and `wasi:keyvalue`
    /// on `keyvalue` (`nats://…` or `redis://…`; wash takes NATS only, and `None` is returned
    /// for Redis). The wasmCloud-like host's compiled code is cached under `target/` (each
    /// process would otherwise compile the component again, seconds each on a shared machine).
    fn serve(
        &self,
        wasm: &Path,
        config: &BTreeMap<String, String>,
        keyvalue: &str,
        tag: &str,
    ) -> Option<HostProcess> {
        self.serve_allowing(wasm, config, keyvalue, tag, &["*"])
    }

    /// [`Tier::serve`] with the workload's `allowedHosts` for outbound `wasi:http`
    /// (`[]` denies every request, as wash host does for a workload without the list).
    fn serve_allowing(
        &self,
        wasm: &Path,
        config: &BTreeMap<String, String>,
        keyvalue: &str,
        tag: &str,
        allowed_hosts: &[&str],
    ) -> Option<HostProcess> {
        match self {
            Tier::Model(kind) => {
                let cache = repo_root().join("target/wasmcloud-host-cache");
                let allowed = serde_json::to_string(allowed_hosts).expect("JSON");
                Some(
                    HostProcess::wasmcloud_host(
                        kind,
                        wasm,
                        config,
                        keyvalue,
                        &[
                            "--cache-dir",
                            cache.to_str().expect("a UTF-8 path"),
                            "--allowed-hosts",
                            &allowed,
                        ],
                        &temp_dir(tag),
                    )
                    .expect("starting the wasmCloud-like host"),
                )
            }
            Tier::Wash(kind) => {
                if !keyvalue.starts_with("nats://") {
                    return None;
                }
                let pgport: u16 = config["pgport"].parse().expect("a port");
                Some(
                    HostProcess::wash_host(
                        kind,
                        &WashWorkload {
                            wasm,
                            config,
                            nats_url: keyvalue,
                            host_loopback_ports: &[pgport],
                            allowed_hosts,
                            name: tag,
                        },
                        &temp_dir(tag),
                    )
                    .expect("starting wash host"),
                )
            }
        }
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// Prints how long a scenario took when it ends (passed or not).
struct Timer(String, std::time::Instant);

impl Timer {
    fn start(what: &str, tier: &Tier) -> Timer {
        Timer(
            format!("{what} on {}", tier.name()),
            std::time::Instant::now(),
        )
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        println!("{}: {:.1} s", self.0, self.1.elapsed().as_secs_f64());
    }
}

/// A throwaway NATS server with JetStream, or `None` (said) when there is no nats-server.
fn nats(what: &str) -> Option<NatsServer> {
    nats_tier(what).map(|bin| NatsServer::start(&bin).expect("starting nats-server"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_on_nats_mint_once_across_instances_recover_and_keep_secrets() {
    for tier in Tier::all("the notes app on NATS") {
        notes_on_nats(&tier).await;
    }
}

async fn notes_on_nats(tier: &Tier) {
    let _timer = Timer::start("notes on NATS", tier);
    let Some(nats) = nats("the notes app on NATS") else {
        return;
    };
    let (up, config) = Upstream::start_wasi().await;
    let host = tier
        .serve(
            &notes_wasi_wasm(),
            &tier.config(&config),
            &nats.url(),
            "wasmcloud-notes",
        )
        .expect("a NATS host");
    let mut responses = String::new();
    let mut requests = 0;
    let mut call = |method: &str, path: &str, body: &str| {
        let (status, text) = host.request(method, path, body).expect("request");
        responses.push_str(&text);
        requests += 1;
        (status, text)
    };

    // Cold: nothing in the store, one mint.
    let (status, text) = call("GET", "/health", "");
    assert_eq!(status, 200, "{text}\n{}", host.logs());
    let health = json(&text);
    assert_eq!(health["credential"]["source"], "minted", "{text}");
    assert_eq!(health["database"]["user"], DEFAULT_CLIENT_ID);
    assert_eq!(up.mints(), 1);

    // Twenty more, one at a time, each in a new instance: the credential comes from the NATS
    // bucket every time (never from instance memory), and nothing more is minted.
    for i in 0..20 {
        let (status, text) = call("GET", "/health", "");
        assert_eq!(status, 200, "request {i}: {text}\n{}", host.logs());
        assert_eq!(
            json(&text)["credential"]["source"],
            "kv",
            "request {i}: {text}"
        );
    }
    assert_eq!(
        up.mints(),
        1,
        "21 requests, one mint: {:?}",
        up.emu.counts()
    );
    // A new instance has no connection to keep: every request logged in anew.
    assert_eq!(up.emu.count(LOGINS_ACCEPTED), 21, "{:?}", up.emu.counts());

    // The notes API.
    let note = format!("from the {}", tier.name());
    let (status, text) = call(
        "POST",
        "/notes",
        &serde_json::json!({ "text": note }).to_string(),
    );
    assert_eq!(status, 201, "{text}");
    let id = json(&text)["id"].as_i64().expect("an id");
    let (status, text) = call("GET", &format!("/notes/{id}"), "");
    assert_eq!((status, json(&text)["text"].clone()), (200, note.into()));
    let (status, text) = call("GET", "/notes?limit=5", "");
    assert_eq!(status, 200, "{text}");
    assert!(
        json(&text)["notes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["id"] == id)),
        "{text}"
    );
    assert_eq!(call("DELETE", &format!("/notes/{id}"), "").0, 204);
    let (status, text) = call("GET", &format!("/notes/{id}"), "");
    assert_eq!(
        (status, json(&text)["error"]["kind"].clone()),
        (404, "not_found".into())
    );
    assert_eq!(up.mints(), 1, "{:?}", up.emu.counts());

    // Every token revoked: the credential in the bucket is refused at login (28P01); the
    // request drops it, mints exactly once more and succeeds, and the next ones use the new
    // record.
    up.emu.revoke_all();
    let (status, text) = call("GET", "/health", "");
    assert_eq!(status, 200, "{text}\n{}", host.logs());
    assert_eq!(json(&text)["credential"]["source"], "minted", "{text}");
    assert_eq!(up.mints(), 2, "{:?}", up.emu.counts());
    assert!(host.logs().contains("minting a new one"), "{}", host.logs());
    for _ in 0..3 {
        let (status, text) = call("GET", "/health", "");
        assert_eq!(status, 200, "{text}");
        assert_eq!(json(&text)["credential"]["source"], "kv", "{text}");
    }
    assert_eq!(up.mints(), 2, "{:?}", up.emu.counts());

    // Sixteen clients at once (32 requests, 32 instances) on the warm bucket: all answer, none
    // mints.
    let host = Arc::new(host);
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let host = host.clone();
            std::thread::spawn(move || {
                (0..2)
                    .map(|_| host.request("GET", "/health", "").expect("request"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (status, text) in t.join().unwrap() {
            assert_eq!(status, 200, "{text}\n{}", host.logs());
            assert_eq!(json(&text)["credential"]["source"], "kv", "{text}");
            responses.push_str(&text);
        }
    }
    assert_eq!(up.mints(), 2, "{:?}", up.emu.counts());
    // One instance, one connection, one accepted login per request (the revoked token's
    // refused login is not counted).
    let requests = requests + 32;
    assert_eq!(
        up.emu.count(LOGINS_ACCEPTED),
        requests,
        "{:?}",
        up.emu.counts()
    );

    let logs = host.logs();
    assert!(logs.contains("minted database credential"), "{logs}");
    up.assert_no_secret(&responses, &logs);
    println!(
        "notes on NATS on the {}: {} mints, {} logins for {requests} requests",
        tier.name(),
        up.mints(),
        up.emu.count(LOGINS_ACCEPTED),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_nats_outage_the_app_answers_and_the_cache_comes_back() {
    for tier in Tier::all("the NATS outage") {
        nats_outage(&tier).await;
    }
}

async fn nats_outage(tier: &Tier) {
    let _timer = Timer::start("NATS outage", tier);
    let Some(mut nats) = nats("the NATS outage") else {
        return;
    };
    let (up, config) = Upstream::start_wasi().await;
    let host = tier
        .serve(
            &notes_wasi_wasm(),
            &tier.config(&config),
            &nats.url(),
            "wasmcloud-nats-outage",
        )
        .expect("a NATS host");
    let name = tier.name();
    let mut responses = String::new();
    let mut health = |what: &str| {
        let started = std::time::Instant::now();
        let (status, text) = host.request("GET", "/health", "").expect("request");
        let took = started.elapsed();
        responses.push_str(&text);
        assert_eq!(status, 200, "{what}: {text}\n{}", host.logs());
        let source = json(&text)["credential"]["source"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        println!(
            "NATS outage on the {name}: {what}: {source} in {:.2} s",
            took.as_secs_f64()
        );
        source
    };
    assert_eq!(health("cold"), "minted");
    assert_eq!(health("warm"), "kv");

    // NATS down: every key-value call fails (after the host's client gives up on it); the app
    // goes on answering, each new instance with a credential of its own.
    nats.stop();
    // Each request is a new instance whose first key-value call waits out the host's NATS
    // client (5 s, a synchronous call no guest timer can cut); the instance then skips the
    // store instead of waiting that long on each of its next calls (about 18: 90 s).
    for i in 0..3 {
        let started = std::time::Instant::now();
        assert_eq!(health(&format!("NATS down, request {i}")), "minted");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(25),
            "request {i} took {:?}, past the 25 s a request may wait for a credential",
            started.elapsed()
        );
    }
    let during = up.mints();
    assert_eq!(during, 4, "{:?}", up.emu.counts());

    // NATS back with its bucket: once the host's client has reconnected, requests take the
    // record written before the outage again and mint nothing.
    nats.restart().expect("restarting nats-server");
    let back = std::time::Instant::now();
    let mut source = String::new();
    while back.elapsed() < std::time::Duration::from_secs(30) && source != "kv" {
        source = health("NATS back");
    }
    assert_eq!(source, "kv", "the cache did not come back: {}", host.logs());
    println!(
        "NATS outage on the {name}: the cache came back {:.1} s after the restart",
        back.elapsed().as_secs_f64()
    );
    assert_eq!(health("after"), "kv");

    let logs = host.logs();
    println!("NATS outage on the {name}: host log\n{logs}");
    up.assert_no_secret(&responses, &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_on_wasmcloud_hosts_say_who_must_act() {
    for tier in Tier::all("the error cases on NATS") {
        errors(&tier).await;
    }
}

async fn errors(tier: &Tier) {
    let _timer = Timer::start("errors", tier);
    let Some(nats) = nats("the error cases on NATS") else {
        return;
    };
    let (up, config) = Upstream::start_wasi().await;
    let config = tier.config(&config);
    let name = tier.name();

    // A workspace that sends its answer a byte every 2 s (no per-read timeout of the host
    // stops it): the core's deadlines cut it, 503 `unavailable` within the load's 25 s.
    up.emu.fault(Fault {
        route: String::new(),
        count: u32::MAX,
        kind: FaultKind::Trickle(std::time::Duration::from_secs(2)),
    });
    let host = tier
        .serve(
            &notes_wasi_wasm(),
            &config,
            &nats.url(),
            "wasmcloud-trickle",
        )
        .expect("a NATS host");
    let started = std::time::Instant::now();
    let (status, text) = host.request("GET", "/health", "").unwrap();
    let took = started.elapsed();
    println!("workspace trickling on the {name}: {status} after {took:.1?}");
    assert_eq!(
        (status, json(&text)["error"]["kind"].clone()),
        (503, "unavailable".into()),
        "{text}\n{}",
        host.logs()
    );
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    up.emu.clear_faults();
    drop(host);

    // The workspace is down (every credential request answers 503): a 503 of kind
    // `unavailable`, and nothing is left in the store that a later request would believe.
    up.emu.fault(Fault {
        route: CREDENTIAL_ROUTE.to_owned(),
        count: 1000,
        kind: FaultKind::Status {
            status: 503,
            error_code: "TEMPORARILY_UNAVAILABLE".to_owned(),
            message: "down for a while".to_owned(),
            retry_after: None,
        },
    });
    let host = tier
        .serve(&notes_wasi_wasm(), &config, &nats.url(), "wasmcloud-down")
        .expect("a NATS host");
    let started = std::time::Instant::now();
    let (status, text) = host.request("GET", "/health", "").unwrap();
    assert_eq!(
        (status, json(&text)["error"]["kind"].clone()),
        (503, "unavailable".into()),
        "{text}\n{}",
        host.logs()
    );
    // The emulator counts every credential request, the refused ones too.
    let attempts = up.mints();
    assert!(attempts >= 1, "{:?}", up.emu.counts());
    println!(
        "workspace down on the {name}: 503 unavailable after {attempts} refused credential requests, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Back up: the next request (a new instance) mints once and answers.
    up.emu.clear_faults();
    let (status, text) = host.request("GET", "/health", "").unwrap();
    assert_eq!(status, 200, "{text}\n{}", host.logs());
    assert_eq!(json(&text)["credential"]["source"], "minted", "{text}");
    assert_eq!(up.mints(), attempts + 1, "{:?}", up.emu.counts());
    up.assert_no_secret(&text, &host.logs());
    drop(host);

    // A wrong secret: the workspace refuses it, the variable is named, the value never shown.
    let wrong = "not-the-secret-0123456789";
    let mut edited = config.clone();
    edited.insert("databricks_client_secret".to_owned(), wrong.to_owned());
    let host = tier
        .serve(&notes_wasi_wasm(), &edited, &nats.url(), "wasmcloud-secret")
        .expect("a NATS host");
    let (status, text) = host.request("GET", "/health", "").unwrap();
    let e = json(&text);
    assert_eq!(
        (status, e["error"]["kind"].clone()),
        (502, "workspace_auth".into()),
        "{text}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("databricks_client_secret")),
        "{text}"
    );
    let logs = host.logs();
    assert!(!text.contains(wrong) && !logs.contains(wrong), "echoed");
    up.assert_no_secret(&text, &logs);
    drop(host);

    // A workload whose allowedHosts lets no outbound request out (wash host's default when the
    // list is absent): a configuration error that names the list, at once, with nothing sent.
    // A NATS of its own: the store above holds a credential, which would answer without a call.
    let Some(empty) = self::nats("the denied workload") else {
        return;
    };
    let sent = up.emu.count(TOKEN_ROUTE) + up.mints();
    let host = tier
        .serve_allowing(
            &notes_wasi_wasm(),
            &config,
            &empty.url(),
            "wasmcloud-denied",
            &[],
        )
        .expect("a NATS host");
    let (status, text) = host.request("GET", "/health", "").unwrap();
    let e = json(&text);
    println!(
        "no allowedHosts on the {name}: {status} {}",
        e["error"]["kind"]
    );
    assert_eq!(
        (status, e["error"]["kind"].clone()),
        (500, "configuration".into()),
        "{text}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("allowedHosts") && m.contains("databricks_host")),
        "{text}"
    );
    assert_eq!(
        up.emu.count(TOKEN_ROUTE) + up.mints(),
        sent,
        "{:?}",
        up.emu.counts()
    );
    up.assert_no_secret(&text, &host.logs());
}

/// A `pguser` the database does not know, on a host that builds a fresh instance per request
/// (`wash host` for `wasi:http@0.2`): the rejection is held in the store and read before any
/// login, so that 100 requests cost a few rejected logins and mints, not two logins each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_role_is_held_in_the_store_across_fresh_instances() {
    for tier in Tier::all("the wrong role on NATS") {
        wrong_role(&tier).await;
    }
}

async fn wrong_role(tier: &Tier) {
    let _timer = Timer::start("wrong role", tier);
    let Some(nats) = nats("the wrong role on NATS") else {
        return;
    };
    let (up, config) = Upstream::start_wasi().await;
    let mut config = tier.config(&config);
    config.insert("pguser".to_owned(), "no_such_role".to_owned());
    let name = tier.name();
    let host = tier
        .serve(
            &notes_wasi_wasm(),
            &config,
            &nats.url(),
            "wasmcloud-wrong-role",
        )
        .expect("a NATS host");
    let mut answers = String::new();
    for _ in 0..100 {
        let (status, text) = host.request("GET", "/health", "").unwrap();
        answers.push_str(&text);
        let body = json(&text);
        assert_eq!(
            (status, &body["error"]["kind"]),
            (502, &"database".into()),
            "{name}: {text}\n{}",
            host.logs()
        );
        assert!(text.contains("`no_such_role`"), "{name}: {text}");
    }
    let rejected = up.emu.count(lakebase_emulator::LOGINS_REJECTED);
    println!(
        "wrong role on the {name}: 100 requests, {} mints, {rejected} rejected logins",
        up.mints()
    );
    assert!(up.mints() <= 10, "{name}: {} mints", up.mints());
    assert!(rejected <= 20, "{name}: {rejected} rejected logins");
    let mut logs = host.logs();
    logs.push_str(&up.emu.log_lines().join("\n"));
    up.assert_no_secret(&answers, &logs);
}

/// The workspace down (503, and hung) from 60 % to 92 % of the credential's life, on hosts that
/// build a fresh instance per request: [`lakebase_e2e::outage`], the two runs side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_outage_on_fresh_instances_fails_no_request() {
    use lakebase_e2e::outage::{self, Down};
    let mut reports = vec![];
    for tier in Tier::all("the workspace outage") {
        let _timer = Timer::start("workspace outage", &tier);
        let mut runs = vec![];
        for down in [Down::Status503, Down::Hung] {
            let Some(nats) = nats("the workspace outage") else {
                return;
            };
            let (up, config) = Upstream::start_wasi().await;
            up.emu.set_db_token_ttl(outage::ttl());
            let host = tier
                .serve(
                    &notes_wasi_wasm(),
                    &tier.config(&config),
                    &nats.url(),
                    &format!("wasmcloud-outage-{}", down.name()),
                )
                .expect("a NATS host");
            runs.push((down, up, host, nats));
        }
        let name = tier.name();
        let sides: Vec<_> = runs
            .iter()
            .map(|(down, up, host, _)| (*down, up, host))
            .collect();
        let done = outage::run_side_by_side(name, &sides);
        for (report, (_, up, host, _)) in done.iter().zip(&runs) {
            let answers = [&report.past_expiry, &Some(report.recovered.clone())]
                .into_iter()
                .flatten()
                .map(|(_, text)| text.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            let mut logs = host.logs();
            logs.push_str(&up.emu.log_lines().join("\n"));
            up.assert_no_secret(&answers, &logs);
        }
        reports.extend(done);
    }
    outage::print_table(&reports);
}

/// The principal's database role does not exist (yet), at 10 requests a second on fresh
/// instances: every answer is the `database` error naming the role, held in the store (a few
/// rejected logins and mints in all, not two logins per request). At 20 s the operator creates
/// the role; the first request after the hold (30 s) logs in, and every later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_role_is_held_then_picked_up_once_created() {
    for tier in Tier::all("the missing role on NATS") {
        missing_role(&tier).await;
    }
}

async fn missing_role(tier: &Tier) {
    let _timer = Timer::start("missing role", tier);
    let Some(nats) = nats("the missing role on NATS") else {
        return;
    };
    let (up, config) = Upstream::start_wasi().await;
    up.emu
        .drop_role(DEFAULT_CLIENT_ID)
        .await
        .expect("DROP ROLE");
    let name = tier.name();
    let host = tier
        .serve(
            &notes_wasi_wasm(),
            &tier.config(&config),
            &nats.url(),
            "wasmcloud-missing-role",
        )
        .expect("a NATS host");
    let started = std::time::Instant::now();
    let (mut answers, mut restored, mut statuses) = (String::new(), None, vec![]);
    while started.elapsed() < std::time::Duration::from_secs(60) {
        if restored.is_none() && started.elapsed() >= std::time::Duration::from_secs(20) {
            up.emu.restore_roles().await.expect("CREATE ROLE");
            restored = Some(statuses.len());
        }
        let (status, text) =
            tokio::task::block_in_place(|| host.request("GET", "/health", "")).unwrap();
        if status != 200 {
            let body = json(&text);
            assert_eq!(
                (status, &body["error"]["kind"]),
                (502, &"database".into()),
                "{name}: {text}\n{}",
                host.logs()
            );
            assert!(
                text.contains(DEFAULT_CLIENT_ID),
                "{name}: the role is named: {text}"
            );
        }
        answers.push_str(&text);
        statuses.push(status);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let restored = restored.expect("restored at 20 s");
    let rejected = up.emu.count(lakebase_emulator::LOGINS_REJECTED);
    let first_ok = statuses.iter().position(|s| *s == 200);
    println!(
        "missing role on the {name}: {} requests, {} mints, {rejected} rejected logins, role created before request {restored}, first success at request {first_ok:?}",
        statuses.len(),
        up.mints()
    );
    assert!(
        statuses[..restored].iter().all(|s| *s == 502),
        "{name}: {statuses:?}"
    );
    let first_ok = first_ok.unwrap_or_else(|| panic!("{name}: never logged in\n{}", host.logs()));
    assert!(
        statuses[first_ok..].iter().all(|s| *s == 200),
        "{name}: once logged in, every request: {statuses:?}"
    );
    assert!(up.mints() <= 10, "{name}: {} mints", up.mints());
    assert!(rejected <= 20, "{name}: {rejected} rejected logins");
    let mut logs = host.logs();
    logs.push_str(&up.emu.log_lines().join("\n"));
    up.assert_no_secret(&answers, &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_one_store_mint_once() {
    for tier in Tier::all("two hosts on one store") {
        two_hosts_on_one_store(&tier).await;
    }
}

async fn two_hosts_on_one_store(tier: &Tier) {
    let _timer = Timer::start("two hosts on one store", tier);
    let wasm = notes_wasi_wasm();
    let redis = RedisServer::start().expect("starting redis-server");
    let nats = nats("two hosts on one NATS");
    let mut stores = vec![("redis", redis.url())];
    if let Some(nats) = &nats {
        stores.push(("nats", nats.url()));
    }
    for (store, url) in stores {
        let (up, config) = Upstream::start_wasi().await;
        let config = tier.config(&config);
        let Some(a) = tier.serve(&wasm, &config, &url, &format!("wasmcloud-{store}-a")) else {
            eprintln!(
                "two hosts on one {store}: not run on the {} (its key-value store is NATS JetStream only)",
                tier.name()
            );
            continue;
        };
        let b = tier
            .serve(&wasm, &config, &url, &format!("wasmcloud-{store}-b"))
            .expect("the second host");
        let mut responses = String::new();
        let (status, text) = a.request("GET", "/health", "").unwrap();
        assert_eq!(status, 200, "{store}: {text}\n{}", a.logs());
        assert_eq!(json(&text)["credential"]["source"], "minted", "{store}");
        responses.push_str(&text);
        for i in 0..20 {
            let (status, text) = b.request("GET", "/health", "").unwrap();
            assert_eq!(status, 200, "{store} request {i}: {text}\n{}", b.logs());
            assert_eq!(
                json(&text)["credential"]["source"],
                "kv",
                "{store} request {i}: {text}"
            );
            responses.push_str(&text);
        }
        assert_eq!(
            up.mints(),
            1,
            "{store}: a cold request on one host, 20 on the other: {:?}",
            up.emu.counts()
        );
        println!(
            "two hosts on one {store} ({}): 21 requests, {} mint",
            tier.name(),
            up.mints()
        );
        up.assert_no_secret(&responses, &format!("{}{}", a.logs(), b.logs()));
    }
}

/// The WASI plugin plugged into a `wasmcloud:postgres` component (`wac plug`), as wasi_plugin.rs
/// does it, written to a temporary file.
fn plugged_consumer() -> PathBuf {
    let consumer = std::fs::read(wasmcloud_consumer_wasm()).expect("the consumer .wasm");
    let plugin = std::fs::read(wasi_plugin_wasm()).expect("the plugin .wasm");
    let bytes = lakebase_devhost::compose::wac_plug(consumer, plugin).expect("wac plug");
    let path = temp_dir("wasmcloud-plugged").join("composed.wasm");
    std::fs::write(&path, bytes).expect("writing the composition");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasmcloud_postgres_component_runs_through_the_plugin_on_nats() {
    for tier in Tier::all("the plugged wasmcloud:postgres component on NATS") {
        plugged_postgres_component(&tier).await;
    }
}

async fn plugged_postgres_component(tier: &Tier) {
    let _timer = Timer::start("plugged wasmcloud:postgres component", tier);
    let Some(nats) = nats("the plugged wasmcloud:postgres component on NATS") else {
        return;
    };
    let (up, config) = Upstream::start_wasi().await;
    let host = tier
        .serve(
            &plugged_consumer(),
            &tier.config(&config),
            &nats.url(),
            "wasmcloud-plugin",
        )
        .expect("a NATS host");
    let mut responses = String::new();
    for i in 0..2 {
        let (status, text) = host.request("GET", "/whoami", "").unwrap();
        assert_eq!(status, 200, "request {i}: {text}\n{}", host.logs());
        let who = json(&text);
        assert_eq!(who["user"], format!("PgValue::Text({DEFAULT_CLIENT_ID:?})"));
        assert_eq!(who["n"], "PgValue::Int4(42)");
        responses.push_str(&text);
    }
    // The second request, in a new instance, found the credential in the NATS bucket.
    assert_eq!(up.mints(), 1, "{:?}", up.emu.counts());
    assert_eq!(up.emu.count(LOGINS_ACCEPTED), 2, "{:?}", up.emu.counts());
    up.assert_no_secret(&responses, &host.logs());
}
