//! The outage scenario, written once for every host process: a credential of a short life
//! ([`ttl`], 60 s unless `OUTAGE_TTL_SECS` says otherwise), requests at about 5 a second, the
//! workspace down (503, or hung) from 60 % to 92 % of the credential's life, across its
//! refresh-ahead window and its reuse limit, then past its server expiry, then back.
//!
//! What is asserted are counts: no failed request while the credential may be served, at most
//! one credential call per back-off period, `unavailable` with the cause past the expiry, a mint
//! once the workspace is back. Latencies are measured and printed as a table row (p99 before the
//! outage, p95 and max in it), never asserted: machines here are shared.

use std::time::{Duration, Instant};

use lakebase_emulator::{Fault, FaultKind};
use lakebase_testkit::host::HostProcess;

use crate::{CREDENTIAL_ROUTE, Upstream};

/// How the workspace fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Down {
    /// Every call answers 503 `TEMPORARILY_UNAVAILABLE` (with `Retry-After: 0`).
    Status503,
    /// Every call hangs for a minute before an answer.
    Hung,
}

impl Down {
    pub fn name(self) -> &'static str {
        match self {
            Down::Status503 => "503",
            Down::Hung => "hung",
        }
    }

    fn fault(self) -> Fault {
        let kind = match self {
            Down::Status503 => FaultKind::Status {
                status: 503,
                error_code: "TEMPORARILY_UNAVAILABLE".into(),
                message: "the workspace is down for maintenance".into(),
                retry_after: Some(0),
            },
            Down::Hung => FaultKind::Latency(Duration::from_secs(60)),
        };
        Fault {
            route: String::new(),
            count: u32::MAX,
            kind,
        }
    }
}

/// The credential lifetime of the scenario: `OUTAGE_TTL_SECS`, else 60 s.
pub fn ttl() -> Duration {
    std::env::var("OUTAGE_TTL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// The most back-off periods that can start in an outage of `span` that begins `left` before
/// the end of the credential's serving: waits of 1 s doubling to 60 s, never over half of what
/// is left, at least 250 ms (the core's outage policy). One credential call per period, across
/// all instances, is the most the outage may cost.
pub fn backoff_periods(span: Duration, left: Duration) -> u64 {
    let (span, left) = (span.as_secs_f64(), left.as_secs_f64());
    let (mut t, mut delay, mut periods) = (0.0, 1.0_f64, 0);
    while t < span {
        periods += 1;
        t += delay.min((left - t) / 2.0).max(0.25);
        delay = (delay * 2.0).min(60.0);
    }
    periods
}

/// What one run saw.
#[derive(Debug)]
pub struct Report {
    pub host: String,
    pub down: Down,
    before: Vec<Duration>,
    window: Vec<Duration>,
    pub failures: Vec<String>,
    pub calls: u64,
    pub periods: u64,
    /// Status and body of a request past the server expiry (the 503 run only).
    pub past_expiry: Option<(u16, String)>,
    /// Status and body of the first request after the workspace came back.
    pub recovered: (u16, String),
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

impl Report {
    /// The table's header, for [`Report::row`].
    pub fn header() -> &'static str {
        "| host | workspace | requests before / in the outage | p99 before | p95 in the outage | max in the outage | credential calls / back-off periods | failed |\n|---|---|---|---|---|---|---|---|"
    }

    /// One Markdown table row.
    pub fn row(&self) -> String {
        let (mut before, mut window) = (self.before.clone(), self.window.clone());
        before.sort_unstable();
        window.sort_unstable();
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        format!(
            "| {} | {} | {} / {} | {} | {} | {} | {} / {} | {} |",
            self.host,
            self.down.name(),
            before.len(),
            window.len(),
            ms(quantile(&before, 0.99)),
            ms(quantile(&window, 0.95)),
            ms(window.last().copied().unwrap_or_default()),
            self.calls,
            self.periods,
            self.failures.len()
        )
    }
}

/// Runs the scenario against `host` (already serving an app on `up`, whose tokens live
/// [`ttl`], set with `up.emu.set_db_token_ttl`). `path` is a route that logs in (`/health`).
pub fn run(host: &HostProcess, name: &str, up: &Upstream, down: Down, path: &str) -> Report {
    let ttl = ttl().as_secs_f64();
    let at = |share: f64| Duration::from_secs_f64(ttl * share);
    let send = |failures: &mut Vec<String>| {
        let asked = Instant::now();
        let answer = host.get(path);
        let took = asked.elapsed();
        match answer {
            Ok((200, _)) => {}
            Ok((status, text)) => failures.push(format!("{status} after {took:?}: {text}")),
            Err(e) => failures.push(format!("no answer after {took:?}: {e}")),
        }
        took
    };
    let mut failures = vec![];
    // The cold start mints; the credential's life starts before its answer.
    send(&mut failures);
    let minted = Instant::now();
    assert!(
        failures.is_empty(),
        "{name}: the cold start failed: {failures:?}\n{}",
        host.logs()
    );
    // About 5 requests a second; a late request does not make the next come sooner.
    let paced = |until: Duration, failures: &mut Vec<String>| {
        let mut took = vec![];
        let mut next = Instant::now();
        while minted.elapsed() < until {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
            }
            next = Instant::now() + Duration::from_millis(200);
            took.push(send(failures));
        }
        took
    };
    let before = paced(at(0.6), &mut failures);
    up.emu.fault(down.fault());
    let calls_before = up.emu.count(CREDENTIAL_ROUTE);
    let start = minted.elapsed();
    let window = paced(at(0.92), &mut failures);
    let calls = up.emu.count(CREDENTIAL_ROUTE) - calls_before;
    // Served until 1/30 of its life before the server's expiry.
    let serve_until = at(1.0 - 1.0 / 30.0);
    let periods = backoff_periods(
        minted.elapsed().saturating_sub(start),
        serve_until.saturating_sub(start),
    );
    let past_expiry = (down == Down::Status503).then(|| {
        let past = serve_until + Duration::from_millis(1500);
        std::thread::sleep(past.saturating_sub(minted.elapsed()));
        host.get(path).unwrap_or_else(|e| (0, e.to_string()))
    });
    up.emu.clear_faults();
    let recovered = host.get(path).unwrap_or_else(|e| (0, e.to_string()));
    Report {
        host: name.to_owned(),
        down,
        before,
        window,
        failures,
        calls,
        periods,
        past_expiry,
        recovered,
    }
}

impl Report {
    /// The scenario's assertions, with the host's logs when one fails.
    pub fn check(&self, host: &HostProcess) {
        let name = format!("{} ({} workspace)", self.host, self.down.name());
        assert!(
            self.failures.is_empty(),
            "{name}: {} requests failed while the credential could be served; first: {}\n{}",
            self.failures.len(),
            self.failures[0],
            host.logs()
        );
        assert!(
            self.calls <= self.periods,
            "{name}: {} credential calls in {} back-off periods",
            self.calls,
            self.periods
        );
        if let Some((status, text)) = &self.past_expiry {
            assert_eq!(*status, 503, "{name}: past the expiry: {text}");
            assert!(
                text.contains("unavailable") && text.contains("TEMPORARILY_UNAVAILABLE"),
                "{name}: the cause is named: {text}"
            );
        }
        let (status, text) = &self.recovered;
        assert_eq!(*status, 200, "{name}: after the outage: {text}");
    }
}

/// [`run`] for each of `runs` (a host already serving on its own upstream) side by side, one
/// thread each; each report is printed as it is checked ([`Report::check`]).
pub fn run_side_by_side(name: &str, runs: &[(Down, &Upstream, &HostProcess)]) -> Vec<Report> {
    let reports: Vec<Report> = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let handles: Vec<_> = runs
                .iter()
                .map(|&(down, up, host)| s.spawn(move || run(host, name, up, down, "/health")))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    });
    for (report, (_, _, host)) in reports.iter().zip(runs) {
        println!("{}\n{}", Report::header(), report.row());
        report.check(host);
    }
    reports
}

/// Prints `reports` as one table.
pub fn print_table(reports: &[Report]) {
    println!("{}", Report::header());
    for r in reports {
        println!("{}", r.row());
    }
}
