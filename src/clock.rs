//! The system clock. The only place in the crate that reads the wall clock. Its sleep is
//! Spin's timer, so it comes with the `spin` feature.

use std::time::Duration;

use chrono::{DateTime, Utc};

use lakebase::host::Clock;

/// Wall clock of the host (`wasi:clocks` inside WebAssembly) with Spin's sleep.
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
        spin_sdk::time::sleep(duration).await
    }
}
