//! Concurrent clients against one or more host processes: every request on a fresh connection,
//! the outcome and start of each recorded, latencies summarised as medians and percentiles; a
//! gauge (e.g. the database sessions open) sampled every second meanwhile, and a summary of a
//! run across credential rotations ([`Rotations`]).

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
    /// When each request started, in the order of `latencies`.
    pub starts: Vec<Instant>,
    /// The gauge of [`run_with_gauge`]: (when, value), every second from the start and once
    /// more when the last client has finished.
    pub gauge: Vec<(Instant, u64)>,
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
        percentile(self.latencies.clone(), p)
    }

    /// The latency at percentile `p` of the requests whose start `pick` accepts, and how many
    /// there were.
    pub fn percentile_of(&self, p: f64, pick: impl Fn(Instant) -> bool) -> (Duration, usize) {
        let v: Vec<Duration> = self
            .starts
            .iter()
            .zip(&self.latencies)
            .filter(|(start, _)| pick(**start))
            .map(|(_, latency)| *latency)
            .collect();
        let n = v.len();
        (percentile(v, p), n)
    }

    /// The run seen against the credential mints that happened during it (`mint_times`, e.g.
    /// `Emulator::mint_times`): a request is "near a mint" when it started within `window`
    /// after one.
    pub fn rotations(&self, mint_times: &[Instant], window: Duration) -> Rotations {
        let near = |t: Instant| {
            mint_times
                .iter()
                .any(|m| t >= *m && t.duration_since(*m) <= window)
        };
        let (p99_near_mint, near_mint) = self.percentile_of(99.0, near);
        let (p99_others, others) = self.percentile_of(99.0, |t| !near(t));
        // The gauge's maximum between consecutive mints (the first rotation starts with the run).
        let mut per_rotation = Vec::new();
        let bounds: Vec<Instant> = mint_times.iter().skip(1).copied().collect();
        let mut from = None;
        for until in bounds.iter().map(Some).chain([None]) {
            let max = self
                .gauge
                .iter()
                .filter(|(t, _)| from.is_none_or(|f| t >= f) && until.is_none_or(|u| t < u))
                .map(|(_, v)| *v)
                .max();
            if let Some(max) = max {
                per_rotation.push(max);
            }
            from = until;
        }
        Rotations {
            mints: mint_times.len(),
            sessions_max: self.gauge.iter().map(|(_, v)| *v).max().unwrap_or(0),
            sessions_end: self.gauge.last().map(|(_, v)| *v).unwrap_or(0),
            sessions_max_per_rotation: per_rotation,
            p99_near_mint,
            near_mint,
            p99_others,
            others,
        }
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

/// The latency at percentile `p` (0–100) of `v`, nearest rank; zero when `v` is empty.
pub fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A run across credential rotations ([`LoadReport::rotations`]).
#[derive(Clone, Debug, Default)]
pub struct Rotations {
    /// Credentials minted.
    pub mints: usize,
    /// The gauge's largest sample (the sessions open, for a run with that gauge).
    pub sessions_max: u64,
    /// Its last sample, taken when the last client had finished.
    pub sessions_end: u64,
    /// Its largest sample in each rotation: from the start to the second mint, then from each
    /// mint to the next (rotations without a sample are left out).
    pub sessions_max_per_rotation: Vec<u64>,
    /// p99 latency of the requests that started within the window after a mint.
    pub p99_near_mint: Duration,
    /// How many requests that is.
    pub near_mint: usize,
    /// p99 latency of the others.
    pub p99_others: Duration,
    /// How many requests that is.
    pub others: usize,
}

impl Rotations {
    /// The largest sample before the second mint (the whole run when there was one mint).
    pub fn sessions_max_first_rotation(&self) -> u64 {
        self.sessions_max_per_rotation.first().copied().unwrap_or(0)
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
    run_inner(nodes, clients_per_node, budget, path, None)
}

/// [`run`], sampling `gauge` every second from the start (e.g. the database sessions open), and
/// once more when the last client has finished: [`LoadReport::gauge`].
pub fn run_with_gauge(
    nodes: &[HostProcess],
    clients_per_node: usize,
    budget: Budget,
    path: &str,
    gauge: &(dyn Fn() -> u64 + Sync),
) -> LoadReport {
    run_inner(nodes, clients_per_node, budget, path, Some(gauge))
}

fn run_inner(
    nodes: &[HostProcess],
    clients_per_node: usize,
    budget: Budget,
    path: &str,
    gauge: Option<&(dyn Fn() -> u64 + Sync)>,
) -> LoadReport {
    let total = budget.requests;
    let next = AtomicUsize::new(0);
    let report = Mutex::new(LoadReport::default());
    let threads = clients_per_node * nodes.len();
    let barrier = std::sync::Barrier::new(threads);
    let started = Instant::now();
    let clients_done = std::sync::atomic::AtomicBool::new(false);
    let samples = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let (clients_done, samples) = (&clients_done, &samples);
        if let Some(gauge) = gauge {
            scope.spawn(move || {
                let mut next_sample = Instant::now();
                while !clients_done.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    if now >= next_sample {
                        samples.lock().unwrap().push((now, gauge()));
                        next_sample += Duration::from_secs(1);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        let mut clients = Vec::new();
        for t in 0..threads {
            let node = &nodes[t % nodes.len()];
            let (next, report, barrier) = (&next, &report, &barrier);
            clients.push(scope.spawn(move || {
                barrier.wait();
                while next.fetch_add(1, Ordering::Relaxed) < total
                    && budget.time.is_none_or(|t| started.elapsed() < t)
                {
                    let t0 = Instant::now();
                    let outcome = node.get(path);
                    let latency = t0.elapsed();
                    let mut r = report.lock().unwrap();
                    r.latencies.push(latency);
                    r.starts.push(t0);
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
            }));
        }
        let joined: Vec<_> = clients.into_iter().map(|c| c.join()).collect();
        // The last sample, before the hosts (and their pools) go away.
        if let Some(gauge) = gauge {
            samples.lock().unwrap().push((Instant::now(), gauge()));
        }
        clients_done.store(true, Ordering::SeqCst);
        for j in joined {
            if let Err(panic) = j {
                std::panic::resume_unwind(panic);
            }
        }
    });
    let mut r = report.into_inner().unwrap();
    r.elapsed = started.elapsed();
    r.gauge = samples.into_inner().unwrap();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_split_requests_and_samples_by_mint() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let ms = Duration::from_millis;
        // Requests at 0..10 s, 10 ms each, except 100 ms right after the mint at 5 s.
        let starts: Vec<Instant> = (0..10).map(at).collect();
        let latencies = (0..10)
            .map(|s| if s == 5 || s == 6 { ms(100) } else { ms(10) })
            .collect();
        let gauge = (0..10)
            .map(|s| (at(s), if s < 5 { 4 } else { 9 }))
            .collect();
        let report = LoadReport {
            latencies,
            starts,
            gauge,
            ..LoadReport::default()
        };
        // Mints at 0 s (the first, cold) and 5 s.
        let r = report.rotations(&[at(0), at(5)], Duration::from_secs(2));
        assert_eq!(r.mints, 2);
        assert_eq!(r.sessions_max_per_rotation, vec![4, 9]);
        assert_eq!(r.sessions_max_first_rotation(), 4);
        assert_eq!((r.sessions_max, r.sessions_end), (9, 9));
        // Near a mint: 0, 1, 2 and 5, 6, 7 s.
        assert_eq!((r.near_mint, r.p99_near_mint), (6, ms(100)));
        assert_eq!((r.others, r.p99_others), (4, ms(10)));
        // One mint: one rotation, the whole run.
        let r = report.rotations(&[at(0)], Duration::from_secs(2));
        assert_eq!(r.sessions_max_per_rotation, vec![9]);
        assert_eq!(percentile(vec![], 99.0), Duration::ZERO);
    }
}
