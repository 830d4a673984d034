//! The epoch ticker: a thread that advances the engine's epoch while guests run.
//!
//! wasmtime checks a guest's deadline only when the epoch moves, so without a ticker a looping
//! guest would never be stopped nor yield to tokio. A sidecar is idle most of the time, though,
//! and a thread waking 1000 times a second for nothing costs CPU on a shared machine: the
//! ticker parks when no guest has run for a while and the next invocation wakes it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::Engine;

use crate::WasmError;

/// Increments the engine epoch every tick while guests run, so they hit their deadline
/// checks; stopped and joined on drop.
///
/// After [`IDLE_TICKS`] ticks with no guest running the thread parks instead of waking 1000
/// times a second, and the next invocation unparks it. Under load it never parks, so
/// invocations pay only an atomic increment.
pub(crate) struct EpochTicker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

/// Ticks without a running guest before the ticker parks.
const IDLE_TICKS: u32 = 100;

struct TickerShared {
    stop: AtomicBool,
    /// Invocations in flight.
    active: AtomicUsize,
    /// The ticker is (about to be) parked: an invocation that sees this unparks it.
    parked: AtomicBool,
}

/// Counts one invocation as running for the ticker while alive.
pub(crate) struct Running(Arc<TickerShared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    /// Starts the ticker thread for `engine`, ticking every `tick`. The thread holds the
    /// engine weakly and ends by itself once the engine is gone.
    pub(crate) fn start(engine: &Engine, tick: Duration) -> Result<EpochTicker, WasmError> {
        let shared = Arc::new(TickerShared {
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
        });
        let weak = engine.weak();
        let st = shared.clone();
        let thread = std::thread::Builder::new()
            .name("egret-wasm-epoch".into())
            .spawn(move || {
                let mut idle = 0u32;
                while !st.stop.load(Ordering::SeqCst) {
                    if idle >= IDLE_TICKS {
                        // Paired with `running`: either it sees `parked` and unparks us, or we
                        // see its increment of `active` and keep ticking (both SeqCst).
                        st.parked.store(true, Ordering::SeqCst);
                        if st.active.load(Ordering::SeqCst) == 0 && !st.stop.load(Ordering::SeqCst)
                        {
                            std::thread::park();
                        }
                        st.parked.store(false, Ordering::SeqCst);
                        idle = 0;
                        continue;
                    }
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                    if st.active.load(Ordering::SeqCst) == 0 {
                        idle += 1;
                    } else {
                        idle = 0;
                    }
                }
            })
            .map_err(|e| WasmError::Engine(format!("starting the epoch ticker thread: {e}")))?;
        Ok(EpochTicker {
            shared,
            thread: Some(thread),
        })
    }

    /// Marks an invocation as running until the guard drops, waking the ticker if it parked.
    pub(crate) fn running(&self) -> Running {
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        if self.shared.parked.load(Ordering::SeqCst) {
            if let Some(t) = &self.thread {
                t.thread().unpark();
            }
        }
        Running(self.shared.clone())
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
