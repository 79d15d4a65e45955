//! Concurrent clients against one or more host processes: every request on a fresh connection,
//! the outcome of each recorded, latencies summarised as medians and percentiles.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::host::HostProcess;

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Requests answered, by HTTP status (0: no HTTP answer at all).
    pub statuses: BTreeMap<u16, usize>,
    /// Latency of every request.
    pub latencies: Vec<Duration>,
    /// Up to five bodies of failed requests, for the test's message.
    pub failures: Vec<String>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl LoadReport {
    /// All requests made.
    pub fn requests(&self) -> usize {
        self.statuses.values().sum()
    }

    /// Requests that did not answer 200.
    pub fn errors(&self) -> usize {
        self.requests() - self.statuses.get(&200).copied().unwrap_or(0)
    }

    /// The latency at percentile `p` (0–100), nearest rank.
    pub fn percentile(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v.sort();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    /// `200×990 500×2` style.
    pub fn statuses_text(&self) -> String {
        self.statuses
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How much load: at most `requests` in all, and no new request after `time`, if given.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Requests in all.
    pub requests: usize,
    /// No request starts after this much time.
    pub time: Option<Duration>,
}

impl Budget {
    /// Exactly `n` requests.
    pub fn requests(n: usize) -> Budget {
        Budget {
            requests: n,
            time: None,
        }
    }

    /// Requests for `time` (at most a million).
    pub fn time(time: Duration) -> Budget {
        Budget {
            requests: 1_000_000,
            time: Some(time),
        }
    }
}

/// `clients` threads per node, each sending `GET path` on a fresh connection to its node until
/// the budget is spent. Every thread starts at the same moment.
pub fn run(
    nodes: &[HostProcess],
    clients_per_node: usize,
    budget: Budget,
    path: &str,
) -> LoadReport {
    let total = budget.requests;
    let next = AtomicUsize::new(0);
    let report = Mutex::new(LoadReport::default());
    let threads = clients_per_node * nodes.len();
    let barrier = std::sync::Barrier::new(threads);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let node = &nodes[t % nodes.len()];
            let (next, report, barrier) = (&next, &report, &barrier);
            scope.spawn(move || {
                barrier.wait();
                while next.fetch_add(1, Ordering::Relaxed) < total
                    && budget.time.is_none_or(|t| started.elapsed() < t)
                {
                    let t0 = Instant::now();
                    let outcome = node.get(path);
                    let latency = t0.elapsed();
                    let mut r = report.lock().unwrap();
                    r.latencies.push(latency);
                    let status = match &outcome {
                        Ok((status, _)) => *status,
                        Err(_) => 0,
                    };
                    *r.statuses.entry(status).or_insert(0) += 1;
                    if status != 200 && r.failures.len() < 5 {
                        r.failures.push(match outcome {
                            Ok((s, body)) => format!("{s}: {body}"),
                            Err(e) => format!("no answer: {e:#}"),
                        });
                    }
                }
            });
        }
    });
    let mut r = report.into_inner().unwrap();
    r.elapsed = started.elapsed();
    r
}
