//! Test-only handler: reveals a secret and logs it, to test that reveal needs
//! a grant and that egret redacts secret values from handler logs.
//!
//! Params: `{"secret": "NAME"}`. On success it logs the value and responds
//! `200` with the value as body (test-only!); on refusal it responds `403`
//! with the host's error string. It also writes kv key `seen` and reports
//! the outcome in `x-kv-set`.

use egret_handler::{kv, Action, Context, Request};

#[derive(serde::Deserialize)]
struct Params {
    secret: String,
}

fn handle(ctx: Context, _req: Request) -> Action {
    let p: Params = match ctx.params() {
        Ok(p) => p,
        Err(e) => return Action::deny(500, &format!("bad params: {e}")),
    };
    let kv_result = match kv::set("seen", "1") {
        Ok(()) => "ok".to_owned(),
        Err(e) => e,
    };
    egret_handler::log::debug!(
        "has_secret({}) = {}",
        p.secret,
        egret_handler::has_secret(&p.secret)
    );
    match egret_handler::reveal_secret(&p.secret) {
        Ok(value) => {
            egret_handler::log::warn!("the secret is {value} (logged on purpose)");
            Action::respond(200)
                .header("x-kv-set", kv_result)
                .body(value)
        }
        Err(e) => Action::deny(403, &e).header("x-kv-set", kv_result),
    }
}

egret_handler::export!(handle);
