//! Days, not minutes: what happens over many rotations, scaled down to seconds. The app's
//! release `.wasm` on the devhost, a real PostgreSQL behind the emulated workspace's login proxy.
//!
//! - a workspace outage across the reuse limit fails no request (the credential in hand is served
//!   until shortly before the server's expiry), and one past the expiry answers `unavailable`;
//! - on a host that lets a request work after its response (the devhost, as Spin 4.1), only the
//!   cold start waits for a mint: rotations are refreshed ahead;
//! - a wrong `pguser` under load mints and fails logins a bounded number of times.
//!
//! The bounded number of database sessions across rotations is `rotations.rs`.

use std::time::{Duration, Instant};

use lakebase_devhost::InstanceReuse;
use lakebase_e2e::*;
use lakebase_emulator::{Fault, FaultKind};

/// Every workspace call answers 503 until `clear_faults` (the count is never reached).
fn workspace_down(s: &Stack) {
    s.emu.fault(Fault {
        route: String::new(),
        count: u32::MAX,
        kind: FaultKind::Status {
            status: 503,
            error_code: "TEMPORARILY_UNAVAILABLE".into(),
            message: "the workspace is down for maintenance".into(),
            // Retried at once, so that each failed refresh costs milliseconds here.
            retry_after: Some(0),
        },
    });
}

fn minutes(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_outage_from_minute_44_to_56_fails_no_request() {
    // A new instance per request (as Spin serves WASIp2 components): what carries the credential
    // through the outage is the key-value record, and the lease holds the other instances back.
    let s = Stack::start().await;
    let (status, h) = s.get("/health").await;
    assert_eq!(
        (status, &h["credential"]["source"]),
        (200, &"minted".into())
    );
    // The guest's clock runs ahead; the token, checked by the proxy on the real clock, stays valid.
    s.host.set_clock_offset(minutes(44));
    workspace_down(&s);
    let mut offset = minutes(44);
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    while offset < minutes(56) {
        s.host.set_clock_offset(offset);
        let asked = Instant::now();
        let (status, h) = s.get("/health").await;
        slowest = slowest.max(asked.elapsed());
        assert_eq!(status, 200, "at {} s: {h}", offset.as_secs());
        assert_eq!(h["credential"]["source"], "kv", "{h}");
        answered += 1;
        offset += Duration::from_secs(20);
    }
    let attempts = s.mints() - 1;
    // Printed, not asserted (a shared machine): each attempt is cut after 1 s.
    println!(
        "outage 44-56 min: {answered} requests answered, {attempts} failed credential calls, slowest request {} ms",
        slowest.as_millis()
    );
    assert!(attempts >= 4, "the refresh was tried");
    assert!(
        attempts <= 4 * answered as u64,
        "at most one refresh per request: {attempts}"
    );
    // The workspace is back: the next request past the back-off mints a new credential.
    s.emu.clear_faults();
    s.host
        .set_clock_offset(minutes(56) + Duration::from_secs(61));
    let (status, h) = s.get("/health").await;
    assert_eq!(
        (status, &h["credential"]["source"]),
        (200, &"minted".into()),
        "{h}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_server_expiry_is_unavailable_with_the_reason() {
    let s = Stack::start().await;
    assert_eq!(s.get("/health").await.0, 200);
    workspace_down(&s);
    s.host.set_clock_offset(minutes(57));
    assert_eq!(s.get("/health").await.0, 200, "57 min: still served");
    s.host
        .set_clock_offset(minutes(58) + Duration::from_secs(1));
    let (status, body) = s.get("/health").await;
    assert_eq!(status, 503, "{body}");
    let text = body.to_string();
    assert!(text.contains("unavailable"), "{text}");
    assert!(text.contains("TEMPORARILY_UNAVAILABLE"), "{text}");
    for secret in s.emu.issued_tokens() {
        assert!(!text.contains(&secret), "a token in the response");
    }
    assert!(!text.contains(lakebase_emulator::DEFAULT_CLIENT_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_are_refreshed_ahead_so_only_the_cold_start_mints_in_a_request() {
    // Instances reused as on Spin 4.1: a request in the last tenth of the reuse window starts
    // the refresh as a task that runs on after its response.
    let s = Stack::start_opts(false, |_, emu| {
        emu.set_db_token_ttl(Duration::from_secs(20));
    })
    .await;
    let host = load_host_with(&s.vars, &s.state_dir, InstanceReuse::SPIN).unwrap();
    let started = Instant::now();
    let mut sources = std::collections::BTreeMap::<String, usize>::new();
    let mut first = None;
    while started.elapsed() < Duration::from_secs(50) {
        let req = http::Request::get("http://127.0.0.1:3000/health")
            .body(bytes::Bytes::new())
            .unwrap();
        let resp = host.handle(req).await.expect("the component answered");
        let status = resp.status().as_u16();
        let body: serde_json::Value = serde_json::from_slice(&resp.into_body()).unwrap();
        assert_eq!(status, 200, "{body}");
        let source = body["credential"]["source"].as_str().unwrap().to_owned();
        first.get_or_insert(source.clone());
        *sources.entry(source).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("20 s tokens for 50 s: {sources:?}, {} mints", s.mints());
    assert_eq!(first.as_deref(), Some("minted"));
    assert_eq!(
        sources.get("minted"),
        Some(&1),
        "only the cold start: {sources:?}"
    );
    // 15 s reuse windows over 50 s: the rotations happened, in the background.
    assert!(s.mints() >= 3, "{} mints", s.mints());
    assert!(s.mints() <= 6, "{} mints", s.mints());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_role_at_50_requests_a_second_for_60_s_mints_at_most_10_times() {
    // The worst case: a new instance per request, so nothing but the store remembers.
    let s = Stack::start_with(|v| {
        v.insert("pguser".into(), "no_such_role".into());
    })
    .await;
    let started = Instant::now();
    let mut n = 0u32;
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    while started.elapsed() < Duration::from_secs(60) {
        let (status, body) = s.get("/health").await;
        *statuses.entry(status).or_default() += 1;
        let text = body.to_string();
        assert!(text.contains("`no_such_role`"), "{text}");
        assert!(text.contains("database"), "{text}");
        n += 1;
        // 50 a second, as far as the requests themselves allow.
        let due = started + Duration::from_millis(20) * n;
        tokio::time::sleep_until(due.into()).await;
    }
    let rejected = s.emu.count(lakebase_emulator::LOGINS_REJECTED);
    println!(
        "wrong role: {n} requests in 60 s ({statuses:?}), {} mints, {rejected} rejected logins",
        s.mints()
    );
    assert!(n >= 1000, "only {n} requests");
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), vec![502]);
    assert!(s.mints() <= 10, "{} mints", s.mints());
    // The hold is in the store and read before any login: the database sees a few failed
    // password logins, not two per request.
    assert!(rejected <= 20, "{rejected} rejected logins");
}
