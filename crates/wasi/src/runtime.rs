//! One tokio current-thread runtime per instance: it drives the Postgres sockets, the
//! connections' background tasks and the timers of the core's deadlines and back-offs.

use std::future::Future;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("a current-thread tokio runtime");
}

/// Runs `future` to completion on this instance's runtime. A WASI 0.2 export is synchronous:
/// call this once per request, around everything that uses the library.
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(future))
}
