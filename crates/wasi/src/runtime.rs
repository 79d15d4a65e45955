//! One tokio current-thread runtime per instance: it drives the Postgres sockets, the
//! connections' background tasks and the timers of the core's deadlines and back-offs.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("a current-thread tokio runtime");
}

/// How many times [`block_on`] was entered on this instance: the number of the request being
/// served (a kept connection is reset once per request, see [`crate::connect`]).
static REQUEST: AtomicU64 = AtomicU64::new(0);

/// Runs `future` to completion on this instance's runtime. A WASI 0.2 export is synchronous:
/// call this once per request, around everything that uses the library. Each call is a new
/// request to [`crate::connect`]: the first `connect` inside it resets the kept session.
pub fn block_on<F: Future>(future: F) -> F::Output {
    REQUEST.fetch_add(1, Ordering::Relaxed);
    RUNTIME.with(|rt| rt.block_on(future))
}

/// [`block_on`] within the same request (the kept connection is not reset for it).
pub(crate) fn block_on_same_request<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(future))
}

/// The request being served (see [`block_on`]).
pub(crate) fn request() -> u64 {
    REQUEST.load(Ordering::Relaxed)
}
