//! Test-only hostile handler: panics (a wasm trap). egret must fail the
//! request closed (Trap).

use egret_handler::{Action, Context, Request};

fn handle(_ctx: Context, req: Request) -> Action {
    if std::hint::black_box(!req.method().is_empty()) {
        panic!("handler exploded on purpose");
    }
    Action::forward()
}

egret_handler::export!(handle);
