//! The system clock. The only place in the crate that reads the wall clock. Its sleep is a
//! `wasi:clocks/monotonic-clock@0.2` timer registered with spin-sdk 5.2's executor.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use spin_executor::CancelOnDropToken;
use wasi::clocks::monotonic_clock;

use lakebase::host::Clock;

/// Wall clock of the host (`wasi:clocks` inside WebAssembly), with a sleep that waits on a host
/// timer without blocking the executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The current wall-clock time, UTC (also without importing [`Clock`]).
    #[allow(clippy::disallowed_methods)]
    pub fn now(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from(std::time::SystemTime::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        SystemClock::now(self)
    }

    async fn sleep(&self, duration: Duration) {
        Sleep::new(duration).await
    }
}

/// A wait until a monotonic instant. spin-sdk 5.2 runs a handler with `spin_executor::run`, which
/// polls the handler's future and, while it is pending, blocks in `wasi:io/poll.poll` on the
/// pollables registered with `push_waker`: so a pending `Sleep` registers a timer pollable for
/// its deadline there, and other futures of the same request (an HTTP call racing a deadline)
/// go on meanwhile. Dropping it cancels the registration.
struct Sleep {
    /// `wasi:clocks/monotonic-clock` instant, in nanoseconds.
    deadline: monotonic_clock::Instant,
    /// The registered timer, cancelled when replaced or dropped.
    timer: Option<CancelOnDropToken>,
}

impl Sleep {
    fn new(duration: Duration) -> Self {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Sleep {
            deadline: monotonic_clock::now().saturating_add(nanos),
            timer: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if monotonic_clock::now() >= this.deadline {
            this.timer = None;
            return Poll::Ready(());
        }
        // A fresh registration each time: the executor drops a pollable once it has fired, and
        // the waker may have changed.
        let pollable = monotonic_clock::subscribe_instant(this.deadline);
        let token = spin_executor::push_waker_and_get_token(pollable, cx.waker().clone());
        this.timer = Some(token.into());
        Poll::Pending
    }
}
