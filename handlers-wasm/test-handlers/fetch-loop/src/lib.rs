//! Test-only handler: calls `fetch` on `params.url` up to `params.times` times (default 100),
//! stopping at the first error, and answers locally with JSON
//! `{"ok": N, "statuses": [...], "error": "..." | null}`: `200` when every call succeeded,
//! `502` when one failed (the host's error text, which names the handler and the reason).
//! Shows the fetch grant (`fetch_hosts`), the per-invocation bound (`fetch.max_calls`) and
//! the non-public address rule from the guest's side.

use egret_handler::{fetch, Action, Context, FetchRequest, Request};

#[derive(serde::Deserialize)]
struct Params {
    url: String,
    #[serde(default = "default_times")]
    times: u32,
}

fn default_times() -> u32 {
    100
}

fn handle(ctx: Context, _req: Request) -> Action {
    let p: Params = match ctx.params() {
        Ok(p) => p,
        Err(e) => return Action::deny(500, &format!("fetch-loop: bad params: {e}")),
    };
    let mut statuses = Vec::new();
    let mut error = None;
    for _ in 0..p.times {
        match fetch(FetchRequest::get(&p.url)) {
            Ok(r) => statuses.push(r.status()),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let body = serde_json::json!({ "ok": statuses.len(), "statuses": statuses, "error": error });
    Action::respond(if error.is_some() { 502 } else { 200 })
        .header("content-type", "application/json")
        .header("x-egret-handler", "fetch-loop")
        .body(body.to_string())
}

egret_handler::export!(handle);
