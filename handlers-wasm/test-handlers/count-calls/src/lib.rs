//! Test-only handler: counts the calls its instance has served, in a global, and sets the
//! count as `x-instance-calls` on the forwarded request. egret gives every request a fresh
//! instance, so the header must always be `1`.

use std::sync::atomic::{AtomicU32, Ordering};

use egret_handler::{Action, Context, Request};

static CALLS: AtomicU32 = AtomicU32::new(0);

fn handle(_ctx: Context, _req: Request) -> Action {
    let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    Action::forward().set_header("x-instance-calls", n.to_string())
}

egret_handler::export!(handle);
