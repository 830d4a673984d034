//! `get-only`: read-only egress. `GET` and `HEAD` are forwarded; any other
//! method gets `405` (and is logged). No params.

use egret_handler::{Action, Context, Request};

const NAME: &str = "get-only";

fn handle(_ctx: Context, req: Request) -> Action {
    match req.method() {
        "GET" | "HEAD" => Action::forward().set_header("x-egret-handler", NAME),
        other => {
            egret_handler::log::info!("blocked {other} {}{}", req.authority(), req.path());
            Action::deny(
                405,
                &format!("egret: method {other} is not allowed (read-only egress)"),
            )
            .header("allow", "GET, HEAD")
            .header("x-egret-handler", NAME)
        }
    }
}

egret_handler::export!(handle);
