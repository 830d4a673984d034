//! `no-http`: denies all HTTP egress with `403`. No params.

use egret_handler::{Action, Context, Request};

fn handle(_ctx: Context, _req: Request) -> Action {
    Action::deny(403, "egret: HTTP egress disabled by policy").header("x-egret-handler", "no-http")
}

egret_handler::export!(handle);
