//! One credential load at a time inside an instance, without any Rust-side wait.
//!
//! Spin runs up to 16 requests at once in one instance, all on one wit-bindgen executor. There a
//! task that sleeps waiting only on a Rust-side event (an async mutex held by another request, a
//! channel, a shared future) panics — "Rust task cannot sleep waiting only on Rust-originating
//! events" — unless wit-bindgen's `inter-task-wakeup` feature is on, and the instance traps with
//! every request in it. So nothing here ever waits on another task: the request that finds no
//! fresh credential and no load in flight takes the [`Ticket`] and loads; every other request
//! sleeps on a host timer ([`crate::host::Clock::sleep`]) and looks again, until the credential
//! is in memory, the load failed (then it gets the same error) or the owner went away without a
//! result (then it takes the ticket itself).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Error;

/// The first wait of a request behind another request's load; each next wait doubles, up to
/// [`POLL_MAX`]. A mint takes two HTTPS round trips (tens to hundreds of milliseconds).
pub(crate) const POLL_MIN: Duration = Duration::from_millis(2);
/// The longest single wait between two looks.
pub(crate) const POLL_MAX: Duration = Duration::from_millis(25);

/// The load in flight in one instance, if any, and how the last one ended.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    busy: AtomicBool,
    /// Loads ended so far (completed, failed or abandoned).
    ended: AtomicU64,
    /// The error of the last failed load and its number in `ended`.
    last_failure: Mutex<Option<(u64, Error)>>,
}

/// The right to load, held by one request of the instance at a time. Dropping it (also when the
/// request is cancelled mid-load) lets the next request take over.
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    flight: &'a Flight,
}

impl Flight {
    /// The ticket, unless another request of the instance holds it. Never waits.
    pub fn try_begin(&self) -> Option<Ticket<'_>> {
        self.busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Ticket { flight: self })
    }

    /// Whether a request of the instance holds the ticket now.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// A mark to pass to [`Flight::failure_since`] later.
    pub fn mark(&self) -> u64 {
        self.ended.load(Ordering::Acquire)
    }

    /// The error of a load that failed after `mark` was taken, for a request that waited on it.
    pub fn failure_since(&self, mark: u64) -> Option<Error> {
        let last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        match last.as_ref() {
            Some((n, e)) if *n > mark => Some(e.shared_copy()),
            _ => None,
        }
    }
}

impl Ticket<'_> {
    /// Ends the load with `result`: a failure is handed to the requests that waited for it.
    pub fn finish<T>(self, result: &Result<T, Error>) {
        if let Err(e) = result {
            let n = self.flight.ended.load(Ordering::Acquire) + 1;
            *self
                .flight
                .last_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some((n, e.shared_copy()));
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.flight.ended.fetch_add(1, Ordering::AcqRel);
        self.flight.busy.store(false, Ordering::Release);
    }
}

/// The wait after `previous` (`None`: the first wait).
pub(crate) fn next_poll(previous: Option<Duration>) -> Duration {
    previous.map_or(POLL_MIN, |d| (d * 2).min(POLL_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn one_ticket_at_a_time_and_dropping_it_frees_it() {
        let f = Flight::default();
        let t = f.try_begin().expect("free");
        assert!(f.try_begin().is_none(), "held");
        drop(t);
        assert!(f.try_begin().is_some(), "freed on drop");
    }

    #[test]
    fn a_failure_reaches_only_those_who_waited_for_it() {
        let f = Flight::default();
        let before = f.mark();
        let t = f.try_begin().unwrap();
        t.finish::<()>(&Err(Error::new(ErrorKind::Unavailable, "workspace down")));
        let after = f.mark();
        assert_eq!(
            f.failure_since(before).map(|e| e.to_string()).as_deref(),
            Some("workspace down")
        );
        assert!(
            f.failure_since(after).is_none(),
            "a later request loads anew"
        );
        // A load that succeeds or is abandoned hands nothing over.
        f.try_begin().unwrap().finish::<()>(&Ok(()));
        drop(f.try_begin().unwrap());
        assert!(f.failure_since(after).is_none());
    }

    #[test]
    fn polls_grow_to_a_cap() {
        let mut d = None;
        let mut seen = vec![];
        for _ in 0..6 {
            let next = next_poll(d);
            seen.push(next.as_millis());
            d = Some(next);
        }
        assert_eq!(seen, vec![2, 4, 8, 16, 25, 25]);
    }
}
