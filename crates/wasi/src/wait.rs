//! Waiting on a `wasi:io` pollable without blocking the instance's runtime, so that the core's
//! deadlines (tokio timers on the same runtime) can cut a hung call.
//!
//! A WASI 0.2 pollable cannot be registered with tokio's reactor, so the wait is done in slices:
//! the instance blocks in `wasi:io/poll` on the pollable or a short timer, whichever comes
//! first, then yields to the runtime, which fires due timers (a deadline drops the waiting
//! future, and with it the host's request) and runs other tasks. An answer that arrives is
//! seen at once; a slow one costs one wake-up per slice.

use std::time::Duration;

use wasip2::clocks::monotonic_clock;
use wasip2::io::poll::{Pollable, poll};

/// The longest the instance blocks on one pollable before the runtime runs again.
const SLICE: Duration = Duration::from_millis(10);

/// Returns when `pollable` is ready; a deadline around the caller may drop it before.
pub(crate) async fn ready(pollable: &Pollable) {
    while !pollable.ready() {
        let slice = monotonic_clock::subscribe_duration(SLICE.as_nanos() as u64);
        poll(&[pollable, &slice]);
        if pollable.ready() {
            return;
        }
        tokio::task::yield_now().await;
    }
}
