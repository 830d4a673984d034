//! Test-only hostile handler: recurses without bound. egret must trap on the
//! wasm stack limit (Trap) and the host process must survive.

use egret_handler::{Action, Context, Request};

/// Only scalars, so every frame lives on the wasm (native) stack rather than
/// Rust's shadow stack in linear memory; the work after the call stops
/// tail-call and accumulator elimination.
#[inline(never)]
fn recurse(n: u64, limit: u64) -> u64 {
    if n >= limit {
        return n;
    }
    let r = recurse(n + 1, limit);
    r.wrapping_mul(31).wrapping_add(n)
}

fn handle(_ctx: Context, req: Request) -> Action {
    // A limit the optimizer cannot see, large enough never to be reached.
    let limit = u64::MAX - req.method().len() as u64;
    let n = recurse(0, limit);
    Action::forward().set_header("x-depth", n.to_string())
}

egret_handler::export!(handle);
