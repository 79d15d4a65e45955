//! What a host adapter needs from the core besides the [`host`](crate::host) traits and the
//! client: the limit the core applies to what the host hands it, and the error an adapter
//! reports in the core's words. `lakebase-spin` and `lakebase-wasi` are built on these; so is
//! an adapter of your own.

pub use crate::deadline::MAX_BODY;
pub use crate::lakebase::not_in_memory;
