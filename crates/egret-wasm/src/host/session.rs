//! The session: one request's instance of a handler, made fresh (under a pool slot, with
//! the phase's epoch budget) or taken from the handler's idle instances, and the calls of
//! each phase (decision, response, observed chunks, stream events) on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::{Engine, Store, UpdateDeadline};

use crate::action::{
    resolve_action, resolve_response_action, GuestAction, GuestResponseAction, ResolvedAction,
    ResolvedResponseAction, MAX_REPLACEMENT_BODY_BYTES,
};
use crate::bindings::{v2, v3};
use crate::epoch::EpochTicker;
use crate::state::{truncate, StateInit, StoreState};
use crate::HandlerError;

use super::failure::{classify, DeadlineExceeded, Failure};
use super::pool::{Idle, Reuse};
use super::{HandlerHost, Instance, LoadedHandler, Pre, RequestHead, SessionSpec, WitVersion};

/// Extra time the wall-clock backstop allows beyond twice the epoch budget. The epoch
/// callback (guest running time) normally fires first; the tokio timer only matters if a host
/// call stalled or the guest waits on a clock, and must leave room for a loaded host's
/// scheduling delays so a quick guest is never cut off by them.
const TOKIO_GRACE: Duration = Duration::from_millis(250);

/// A session's limits, per phase: guest running time, the wall-clock backstop, memory.
#[derive(Clone, Copy, Debug)]
pub(super) struct Budget {
    pub(super) timeout: Duration,
    pub(super) backstop: Duration,
    pub(super) memory_limit: usize,
}

impl Budget {
    fn of(spec: &SessionSpec<'_>, max_memory_bytes: usize) -> Budget {
        let timeout = spec.limits.timeout;
        Budget {
            timeout,
            // A guest blocked in `fetch` is not running and not charged ticks; the
            // wall-clock backstop allows for its fetches.
            backstop: timeout * 2 + TOKIO_GRACE + spec.services.fetch_allowance(),
            memory_limit: spec.limits.memory_bytes.min(max_memory_bytes),
        }
    }
}

/// A store for a fresh instance whose epoch callback stops the guest once it has run for
/// `timeout` (counted in `epoch_tick`s, in the returned counter, which each call resets).
fn budgeted_store(
    engine: &Engine,
    state: StoreState,
    timeout: Duration,
    epoch_tick: Duration,
) -> (Store<StoreState>, Arc<AtomicU64>) {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // The budget counts ticks the guest was running for, not wall-clock time: when the
    // thread is descheduled (a busy 2-core host) or the task waits behind others after a
    // yield, the epoch moves on by many ticks but the guest sees one callback on resuming.
    // A wall-clock deadline made 10 µs handlers time out under load.
    let tick = epoch_tick.max(Duration::from_micros(100));
    let budget = timeout.as_micros().div_ceil(tick.as_micros()).max(1) as u64;
    let ticks = Arc::new(AtomicU64::new(0));
    let counter = ticks.clone();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if counter.fetch_add(1, Ordering::Relaxed) + 1 > budget {
            Err(wasmtime::Error::new(DeadlineExceeded))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    (store, ticks)
}

/// One request's instance of a handler: its phases run here, in order. Dropping it returns
/// the instance's slot to wasmtime's pool, or — for a reusing binding, after a request that
/// ended cleanly — the instance itself to the handler's pool of idle instances.
pub struct Session {
    /// Always `Some` until the session is dropped (taken then to go back to the pool).
    store: Option<Store<StoreState>>,
    instance: Option<Instance>,
    ctx: v2::egret::handler::types::Context,
    ticker: Arc<EpochTicker>,
    /// Epoch ticks the current call has run (reset per call: each phase has the budget).
    ticks: Arc<AtomicU64>,
    budget: Budget,
    body_buffered: bool,
    response_buffered: bool,
    /// A guest call is under way: set while one runs, so a session dropped in the middle of
    /// one (its request cancelled) is never reused.
    in_call: bool,
    reuse: Option<Reuse>,
    /// How long the session waited for a pool slot, when it had to.
    waited: Option<Duration>,
    /// Its pool slot: released after the store (declared earlier) is dropped, or handed on
    /// with the instance to the idle pool.
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(reuse) = self.reuse.take() else {
            return;
        };
        if self.in_call {
            return;
        }
        if let (Some(store), Some(instance), Some(permit)) =
            (self.store.take(), self.instance.take(), self.permit.take())
        {
            reuse.pool.give_back(Idle {
                store,
                instance,
                ticks: self.ticks.clone(),
                uses: reuse.uses + 1,
                base_memory: reuse.base_memory,
                timeout: self.budget.timeout,
                permit,
            });
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handler", &self.ctx.handler_name)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a session of `h` on `host`: see [`HandlerHost::session`].
    pub(super) async fn start(
        host: &HandlerHost,
        h: &LoadedHandler,
        spec: SessionSpec<'_>,
    ) -> Result<Session, HandlerError> {
        let handler = spec.handler_name;
        let budget = Budget::of(&spec, host.config.max_memory_bytes);
        let reuse = spec.reuse;
        let init = StateInit {
            handler,
            sandbox: spec.sandbox_id,
            grants: spec.grants,
            secrets: spec.secrets,
            kv: spec.kv,
            memory_limit: budget.memory_limit,
            services: spec.services,
        };
        let session = |store, ticks, permit, waited| Session {
            store: Some(store),
            instance: None,
            ctx: v2::egret::handler::types::Context {
                handler_name: handler.to_owned(),
                sandbox_id: spec.sandbox_id.to_owned(),
                params_json: spec.params_json.to_owned(),
            },
            ticker: host.ticker.clone(),
            ticks,
            budget,
            body_buffered: false,
            response_buffered: false,
            in_call: false,
            reuse: None,
            waited,
            permit: Some(permit),
        };
        if reuse {
            if let Some(mut idle) = h.pool.take(spec.sandbox_id, budget.timeout) {
                idle.store.data_mut().renew(init);
                idle.store.set_epoch_deadline(1);
                let mut s = session(idle.store, idle.ticks, idle.permit, None);
                s.instance = Some(idle.instance);
                s.reuse = Some(Reuse {
                    pool: h.pool.clone(),
                    uses: idle.uses,
                    base_memory: idle.base_memory,
                });
                return Ok(s);
            }
        }
        let (permit, waited) = host.slots.admit(handler).await?;
        let (store, ticks) = budgeted_store(
            &host.compiler.engine,
            StoreState::new(init),
            budget.timeout,
            host.config.epoch_tick,
        );
        let mut s = session(store, ticks, permit, waited);
        s.instantiate(&h.compiled.pre).await?;
        if reuse {
            s.reuse = Some(Reuse {
                pool: h.pool.clone(),
                uses: 0,
                base_memory: s.store().data().limiter.memory_bytes,
            });
        }
        Ok(s)
    }

    /// Instantiates `pre` in the session's store, under the phase's budget.
    async fn instantiate(&mut self, pre: &Pre) -> Result<(), HandlerError> {
        let instance = {
            let _running = self.ticker.running();
            let store = self.store.as_mut().expect("a session holds its store");
            let run = async { pre.instantiate(store).await.map_err(Failure::Instantiate) };
            match tokio::time::timeout(self.budget.backstop, run).await {
                Ok(r) => r,
                Err(_) => Err(Failure::TokioTimeout),
            }
        };
        match instance {
            Ok(i) => {
                self.instance = Some(i);
                Ok(())
            }
            Err(f) => Err(self.failed(f)),
        }
    }

    /// The WIT version of the instance.
    pub fn wit_version(&self) -> WitVersion {
        self.instance
            .as_ref()
            .map_or(WitVersion::V0_3, Instance::version)
    }

    /// How long the session waited for a free instance slot, if every slot was taken when
    /// it started.
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }

    fn store(&self) -> &Store<StoreState> {
        self.store.as_ref().expect("a session holds its store")
    }

    /// The key/values the guest attached to the request's audit event so far
    /// (`audit-field`), redacted and bounded.
    pub fn audit_fields(&self) -> &[(String, String)] {
        self.store().data().audit.as_slice()
    }

    /// Run one call of the guest under the phase's budget, logging its output.
    async fn call<T, F>(&mut self, f: F) -> Result<T, HandlerError>
    where
        F: for<'s> FnOnce(
            &'s Instance,
            &'s mut Store<StoreState>,
            &'s v2::egret::handler::types::Context,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = wasmtime::Result<T>> + Send + 's>,
        >,
    {
        self.ticks.store(0, Ordering::Relaxed);
        let store = self.store.as_mut().expect("a session holds its store");
        store.data_mut().fetches = 0;
        self.in_call = true;
        let outcome = {
            let _running = self.ticker.running();
            let instance = self.instance.as_ref().expect("started");
            let run = f(instance, store, &self.ctx);
            match tokio::time::timeout(self.budget.backstop, run).await {
                Ok(r) => r.map_err(Failure::Call),
                Err(_) => Err(Failure::TokioTimeout),
            }
        };
        self.in_call = false;
        let state = self
            .store
            .as_ref()
            .expect("a session holds its store")
            .data();
        let output = state.output.take();
        if !output.is_empty() {
            let text = truncate(state.redact(&String::from_utf8_lossy(&output)), 4096);
            tracing::debug!(target: "egret_wasm::guest", handler = state.handler(), sandbox = state.sandbox(), "guest output: {text}");
        }
        match outcome {
            Ok(v) => Ok(v),
            Err(f) => {
                // After a trap the instance may not be entered again.
                self.instance = None;
                let e = classify(f, state, &self.budget, &output);
                tracing::warn!(
                    handler = state.handler(),
                    sandbox = state.sandbox(),
                    kind = e.kind(),
                    detail = e.detail().unwrap_or(""),
                    "handler invocation failed: {e}"
                );
                Err(e)
            }
        }
    }

    fn failed(&self, f: Failure) -> HandlerError {
        let state = self.store().data();
        let e = classify(f, state, &self.budget, &[]);
        tracing::warn!(
            handler = state.handler(),
            sandbox = state.sandbox(),
            kind = e.kind(),
            "handler instantiation failed: {e}"
        );
        e
    }

    fn closed(&self) -> HandlerError {
        HandlerError::Trap {
            handler: self.ctx.handler_name.clone(),
            message: "the handler failed earlier in this request".into(),
            detail: String::new(),
        }
    }

    /// The decision on a request: the guest's raw action. `body` is given when the binding
    /// buffers request bodies (0.1.0 components never see it).
    pub async fn decide(
        &mut self,
        head: RequestHead,
        body: Option<bytes::Bytes>,
    ) -> Result<GuestAction, HandlerError> {
        if self.instance.is_none() {
            return Err(self.closed());
        }
        self.body_buffered = body.is_some();
        let result = match self.instance.as_ref() {
            Some(Instance::V1(_)) => {
                let head = crate::convert::head_v1(head);
                self.call(move |i, store, ctx| {
                    let Instance::V1(h) = i else { unreachable!() };
                    let ctx = crate::convert::context_v1(ctx.clone());
                    Box::pin(async move {
                        h.call_handle(store, &ctx, &head)
                            .await
                            .map(GuestAction::from)
                    })
                })
                .await
            }
            _ => {
                let req = v2::egret::handler::types::Request {
                    head,
                    body: body.map(|b| b.to_vec()),
                };
                self.call(move |i, store, ctx| {
                    Box::pin(async move {
                        match i {
                            Instance::V2(h) => h.call_handle(store, ctx, &req).await,
                            Instance::V3(h) => h.call_handle(store, ctx, &req).await,
                            Instance::V1(_) => unreachable!("handled above"),
                        }
                        .map(GuestAction::from)
                    })
                })
                .await
            }
        };
        let state = self.store().data();
        if state.logs_dropped > 0 {
            tracing::warn!(
                target: "egret_wasm::guest",
                handler = state.handler(),
                sandbox = state.sandbox(),
                dropped = state.logs_dropped,
                "handler exceeded its log line budget; lines dropped"
            );
        }
        result
    }

    /// [`Session::decide`] followed by [`resolve_action`] against the secrets granted to the
    /// binding (including any the guest set in this request).
    pub async fn handle(
        &mut self,
        head: RequestHead,
        body: Option<bytes::Bytes>,
    ) -> Result<ResolvedAction, HandlerError> {
        let action = self.decide(head, body).await?;
        let state = self.store().data();
        let granted = state.granted();
        resolve_action(
            &self.ctx.handler_name,
            action,
            state.grants(),
            &granted,
            self.body_buffered,
        )
    }

    /// The response phase: the guest's raw decision on the response. `body` is given when
    /// the binding buffers responses. A 0.1.0 component passes every response unchanged.
    pub async fn respond_raw(
        &mut self,
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Option<bytes::Bytes>,
    ) -> Result<GuestResponseAction, HandlerError> {
        self.response_buffered = body.is_some();
        match self.instance.as_ref() {
            None => Err(self.closed()),
            Some(Instance::V1(_)) => Ok(GuestResponseAction::Pass(Default::default())),
            Some(_) => {
                let resp = v2::egret::handler::types::Response {
                    status,
                    headers,
                    body: body.map(|b| b.to_vec()),
                };
                self.call(move |i, store, ctx| {
                    Box::pin(async move {
                        match i {
                            Instance::V2(h) => h.call_on_response(store, ctx, &resp).await,
                            Instance::V3(h) => h.call_on_response(store, ctx, &resp).await,
                            Instance::V1(_) => unreachable!("matched above"),
                        }
                        .map(GuestResponseAction::from)
                    })
                })
                .await
            }
        }
    }

    /// [`Session::respond_raw`] validated.
    pub async fn on_response(
        &mut self,
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Option<bytes::Bytes>,
    ) -> Result<ResolvedResponseAction, HandlerError> {
        let action = self.respond_raw(status, headers, body).await?;
        resolve_response_action(&self.ctx.handler_name, action, self.response_buffered)
    }

    /// The observe phase: a response body chunk, after it was sent.
    pub async fn chunk(&mut self, chunk: &[u8]) -> Result<(), HandlerError> {
        match self.instance.as_ref() {
            None => Err(self.closed()),
            Some(Instance::V1(_)) => Ok(()),
            Some(_) => {
                let chunk = chunk.to_vec();
                self.call(move |i, store, ctx| {
                    Box::pin(async move {
                        match i {
                            Instance::V2(h) => h.call_on_response_chunk(store, ctx, &chunk).await,
                            Instance::V3(h) => h.call_on_response_chunk(store, ctx, &chunk).await,
                            Instance::V1(_) => unreachable!("matched above"),
                        }
                    })
                })
                .await
            }
        }
    }

    /// The observe phase: the response body ended.
    pub async fn end(&mut self) -> Result<(), HandlerError> {
        match self.instance.as_ref() {
            None => Err(self.closed()),
            Some(Instance::V1(_)) => Ok(()),
            Some(_) => {
                self.call(move |i, store, ctx| {
                    Box::pin(async move {
                        match i {
                            Instance::V2(h) => h.call_on_response_end(store, ctx).await,
                            Instance::V3(h) => h.call_on_response_end(store, ctx).await,
                            Instance::V1(_) => unreachable!("matched above"),
                        }
                    })
                })
                .await
            }
        }
    }

    /// The stream phase: one piece of the response body (a chunk, or a whole server-sent
    /// event) before it is sent. Only components of 0.3.0 have it; the binding's policy is
    /// checked against the component's version when the handler set is installed, so an
    /// earlier component here is the caller's mistake and is reported as one.
    pub async fn event(&mut self, event: &[u8]) -> Result<EventAction, HandlerError> {
        match self.instance.as_ref() {
            None => Err(self.closed()),
            Some(Instance::V3(_)) => {
                let event = event.to_vec();
                let action = self
                    .call(move |i, store, ctx| {
                        let Instance::V3(h) = i else {
                            unreachable!("matched above")
                        };
                        Box::pin(async move {
                            h.call_on_response_event(store, ctx, &event)
                                .await
                                .map(EventAction::from)
                        })
                    })
                    .await?;
                match action {
                    EventAction::Replace(b) if b.len() > MAX_REPLACEMENT_BODY_BYTES => {
                        Err(HandlerError::InvalidAction {
                            handler: self.ctx.handler_name.clone(),
                            reason: format!(
                                "a replaced stream event is {} bytes; at most {MAX_REPLACEMENT_BODY_BYTES}",
                                b.len()
                            ),
                        })
                    }
                    a => Ok(a),
                }
            }
            Some(_) => Err(HandlerError::InvalidAction {
                handler: self.ctx.handler_name.clone(),
                reason: format!(
                    "the stream phase needs a component of {}; this one is {}",
                    WitVersion::V0_3.world(),
                    self.wit_version().world()
                ),
            }),
        }
    }
}

/// What the stream phase decided for one piece of a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    /// Send it on unchanged.
    Pass,
    /// Send these bytes instead.
    Replace(bytes::Bytes),
    /// Send nothing for it.
    Drop,
}

impl From<v3::egret::handler::streaming::EventAction> for EventAction {
    fn from(a: v3::egret::handler::streaming::EventAction) -> Self {
        use v3::egret::handler::streaming::EventAction as A;
        match a {
            A::Pass => EventAction::Pass,
            A::Replace(b) => EventAction::Replace(b.into()),
            A::Drop => EventAction::Drop,
        }
    }
}
