//! Test-only hostile handler: spins forever. egret must cut it off at the
//! deadline (Timeout) without stalling other requests.

use egret_handler::{Action, Context, Request};

fn handle(_ctx: Context, _req: Request) -> Action {
    let mut n: u64 = 0;
    loop {
        // black_box keeps the optimizer from proving anything about the loop.
        n = std::hint::black_box(n.wrapping_add(1));
        if std::hint::black_box(n) == u64::MAX {
            break;
        }
    }
    Action::forward()
}

egret_handler::export!(handle);
