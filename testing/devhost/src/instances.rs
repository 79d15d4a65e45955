//! Instance reuse as Spin 4.1's HTTP trigger does it, on wasmtime-wasi-http's own `ProxyHandler`
//! (the dispatcher Spin itself uses for `wasi:http@0.3.0`): one queue of requests, workers that
//! each own one store and instance, up to 128 requests per instance, 16 at once, an instance
//! dropped after 1 s idle, and a trap ending every request the instance had accepted.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::GuestTaskId;
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, Proxy, ProxyPre, ShouldAccept, ViewFn, WorkerExpiration, WorkerState,
    WorkerStatus,
};
use wasmtime_wasi_http::p3::WasiHttpView as _;

use crate::host::{Ctx, Shared, new_store};

/// How instances are reused (Spin's `--max-instance-reuse-count`,
/// `--max-instance-concurrent-reuse-count` and `--idle-instance-timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceReuse {
    /// Requests one instance serves in its life.
    pub max_requests: usize,
    /// Requests one instance runs at the same time.
    pub max_concurrent: usize,
    /// An instance with no request for this long is dropped.
    pub idle_timeout: Duration,
}

impl InstanceReuse {
    /// Spin 4.1's defaults for WASIp3 components: 128 requests, 16 at once, 1 s idle.
    pub const SPIN: InstanceReuse = InstanceReuse {
        max_requests: 128,
        max_concurrent: 16,
        idle_timeout: Duration::from_secs(1),
    };

    /// A fresh instance per request (what Spin does for WASIp2 components): every request
    /// starts with an empty memory, so the cache across instances is always exercised.
    pub const FRESH: InstanceReuse = InstanceReuse {
        max_requests: 1,
        max_concurrent: 1,
        idle_timeout: Duration::ZERO,
    };
}

impl Default for InstanceReuse {
    fn default() -> Self {
        InstanceReuse::SPIN
    }
}

/// Makes instances for the handler.
pub(crate) struct Instances {
    pub engine: Engine,
    pub pre: ProxyPre<Ctx>,
    pub shared: Arc<Shared>,
    pub reuse: InstanceReuse,
}

impl HandlerState for Instances {
    type StoreData = Ctx;
    type WorkerExpiration = IdleExpiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<Ctx, IdleExpiration, Worker>> {
        let mut store = new_store(&self.engine, &self.shared);
        store.limiter(|ctx| &mut ctx.memory);
        let proxy = self.pre.instantiate_async(&mut store).await?;
        self.shared.instances.fetch_add(1, Ordering::Relaxed);
        let view = match &proxy {
            Proxy::P2(_) => {
                ViewFn::P2(|ctx: &mut Ctx| wasmtime_wasi_http::p2::WasiHttpView::http(ctx))
            }
            Proxy::P3(_) => ViewFn::P3(|ctx: &mut Ctx| ctx.http()),
        };
        Ok(Instance {
            store,
            proxy,
            view,
            expiration: IdleExpiration {
                idle_timeout: self.reuse.idle_timeout,
                timer: None,
            },
            state: Worker { reuse: self.reuse },
        })
    }
}

/// Drops an idle instance after the idle timeout; a busy one never expires (Spin's default has
/// no request timeout).
pub(crate) struct IdleExpiration {
    idle_timeout: Duration,
    timer: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
}

impl WorkerExpiration for IdleExpiration {
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        state: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        if state != WorkerStatus::Idle {
            self.timer = None;
            return Poll::Pending;
        }
        let deadline = start + self.idle_timeout;
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        let timer = match &mut self.timer {
            Some((at, timer)) if *at == deadline => timer,
            slot => {
                let sleep = Box::pin(tokio::time::sleep_until(deadline.into()));
                &mut slot.insert((deadline, sleep)).1
            }
        };
        timer.as_mut().poll(cx)
    }
}

/// One instance's limits.
pub(crate) struct Worker {
    reuse: InstanceReuse,
}

impl WorkerState for Worker {
    type StoreData = Ctx;
    type RequestId = ();

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.reuse.max_requests {
            ShouldAccept::Never
        } else if concurrent >= self.reuse.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, Ctx>,
        _id: (),
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        Box::pin(std::future::pending())
    }

    fn drop(&self, store: Store<Ctx>, result: wasmtime::Result<()>) {
        if let Err(e) = result {
            eprintln!(
                "devhost: an instance failed and was dropped with every request it had accepted: {e:?}"
            );
        }
        drop(store);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_spin() {
        let w = Worker {
            reuse: InstanceReuse::SPIN,
        };
        assert!(matches!(w.should_accept_request(0, 0), ShouldAccept::Yes));
        assert!(matches!(
            w.should_accept_request(15, 100),
            ShouldAccept::Yes
        ));
        assert!(matches!(w.should_accept_request(16, 100), ShouldAccept::No));
        assert!(matches!(
            w.should_accept_request(0, 128),
            ShouldAccept::Never
        ));
        let fresh = Worker {
            reuse: InstanceReuse::FRESH,
        };
        assert!(matches!(
            fresh.should_accept_request(0, 0),
            ShouldAccept::Yes
        ));
        assert!(matches!(
            fresh.should_accept_request(0, 1),
            ShouldAccept::Never
        ));
    }
}
