//! Time from `wasi:clocks`; sleeps on the instance's tokio timer.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lakebase::host::Clock;

/// The host's wall clock; sleeps on the tokio runtime of [`crate::block_on`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WasiClock;

impl Clock for WasiClock {
    // The one place of this crate that reads the wall clock (`wasi:clocks/wall-clock`).
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from(std::time::SystemTime::now())
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await
    }
}
