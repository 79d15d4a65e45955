//! Deadlines on host calls, measured by the host's own timers.
//!
//! Every outbound call is raced against [`Clock::sleep`]: a workspace that accepts a connection
//! and never answers, or a database that stalls at login, costs a bounded time, and the dropped
//! call is cancelled by the host. Waiting on a host timer is also what Spin's executor allows.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::future::{Either, select};

use crate::host::Clock;

/// One HTTP exchange with the workspace: connect, headers and the whole body.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// One Postgres connect (TCP, TLS and login).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole credential load in one request: key-value, waiting for another instance's lease,
/// workspace token, look-ups, the mint and all their retries.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(25);
/// The largest workspace answer read (credential answers are a few kilobytes).
pub const MAX_BODY: usize = 1024 * 1024;

/// `future`'s output, or `None` if `limit` passed first (the future is then dropped).
pub async fn within<C: Clock, T>(
    clock: &C,
    limit: Duration,
    future: impl Future<Output = T>,
) -> Option<T> {
    let future = pin!(future);
    let timer = pin!(clock.sleep(limit));
    match select(future, timer).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}
