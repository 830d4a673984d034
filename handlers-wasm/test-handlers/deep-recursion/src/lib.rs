//! Test-only hostile handler: recurses without bound. egret must trap on the
//! wasm stack limit (Trap) and the host process must survive.

use egret_handler::{Action, Context, Request};

#[inline(never)]
fn recurse(depth: u64, pad: [u64; 16]) -> u64 {
    // The array and the work after the call stop tail-call elimination and
    // make each frame use real stack.
    let next = std::hint::black_box(pad);
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1, next).wrapping_add(next[(depth % 16) as usize])
}

fn handle(_ctx: Context, _req: Request) -> Action {
    let n = recurse(0, [1; 16]);
    Action::forward().set_header("x-depth", n.to_string())
}

egret_handler::export!(handle);
