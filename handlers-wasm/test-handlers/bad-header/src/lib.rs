//! Test-only hostile handler: returns invalid header edits. egret's action
//! resolution must reject them (InvalidAction naming the header).
//!
//! Params: `{"mode": "space" | "crlf" | "host" | "path"}` (default: both a
//! header name with a space and a CRLF value, space first).

use egret_handler::{Action, Context, Request};

#[derive(serde::Deserialize, Default)]
struct Params {
    #[serde(default)]
    mode: Option<String>,
}

fn handle(ctx: Context, _req: Request) -> Action {
    let p: Params = ctx.params().unwrap_or_default();
    match p.mode.as_deref() {
        Some("crlf") => Action::forward().set_header("x-injected", "ok\r\nevil: 1"),
        Some("host") => Action::forward().set_header("host", "evil.test"),
        Some("path") => Action::forward().path("//evil.test/steal"),
        _ => Action::forward()
            .set_header("bad name", "x")
            .set_header("x-injected", "ok\r\nevil: 1"),
    }
}

egret_handler::export!(handle);
