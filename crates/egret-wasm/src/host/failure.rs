//! Failure classification: what went wrong in an instantiation or a guest call, told apart
//! into the [`HandlerError`] kinds (timeout, out of memory, trap, exit...) with guest output
//! and secrets kept out of the short message.

use std::fmt;

use crate::state::{truncate, StoreState};
use crate::HandlerError;

use super::session::Budget;

/// Longest detail string kept for a trap.
const MAX_TRAP_DETAIL: usize = 8 << 10;

/// Marker error returned by the epoch callback when the deadline passed.
#[derive(Debug)]
pub(super) struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("handler deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// How an invocation went wrong, before classification.
pub(super) enum Failure {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
    TokioTimeout,
}

/// The [`HandlerError`] for `f`, given the store's state after it and the guest's output.
pub(super) fn classify(
    f: Failure,
    state: &StoreState,
    budget: &Budget,
    output: &[u8],
) -> HandlerError {
    let handler = state.handler().to_owned();
    let timeout = budget.timeout;
    let (err, instantiating) = match f {
        Failure::TokioTimeout => return HandlerError::Timeout { handler, timeout },
        Failure::Instantiate(e) => (e, true),
        Failure::Call(e) => (e, false),
    };
    if err.downcast_ref::<DeadlineExceeded>().is_some()
        || matches!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        )
    {
        return HandlerError::Timeout { handler, timeout };
    }
    if state.limiter.memory_denied {
        return HandlerError::OutOfMemory {
            handler,
            limit_bytes: budget.memory_limit,
        };
    }
    if instantiating {
        return HandlerError::Instantiate {
            handler,
            reason: state.redact(&format!("{err:#}")),
        };
    }
    let message = trap_message(&err, state, output);
    let mut detail = format!("{err:?}");
    if !output.is_empty() {
        detail.push_str("\nguest output:\n");
        detail.push_str(&String::from_utf8_lossy(output));
    }
    HandlerError::Trap {
        handler,
        message,
        detail: truncate(state.redact(&detail), MAX_TRAP_DETAIL),
    }
}

/// The short message of a failed call: the trap in words, an `exit`, or the root cause.
fn trap_message(err: &wasmtime::Error, state: &StoreState, output: &[u8]) -> String {
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        match trap {
            wasmtime::Trap::StackOverflow => {
                "wasm trap: call stack exhausted (stack overflow)".to_owned()
            }
            // Rust's panic handler prints before it aborts with `unreachable`.
            wasmtime::Trap::UnreachableCodeReached if !output.is_empty() => {
                "wasm trap: the handler panicked or aborted".to_owned()
            }
            other => format!("wasm trap: {other}"),
        }
    } else if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        format!("the handler called exit({})", exit.0)
    } else {
        truncate(state.redact(&err.root_cause().to_string()), 256)
    }
}
