//! `respond-from-kv`: answers locally from the sandbox's kv store; the request
//! never reaches upstream. The kv key is `params.key` if set, otherwise the
//! request path (without query). Found: `200` with the stored bytes and
//! `content-type` from params (default `application/octet-stream`). Absent:
//! `404`.
//!
//! Params (all optional): `{"key": "fixture", "content_type": "application/json"}`.

use egret_handler::{kv, Action, Context, Request};

const NAME: &str = "respond-from-kv";

#[derive(serde::Deserialize)]
struct Params {
    #[serde(default)]
    key: Option<String>,
    #[serde(default = "default_content_type")]
    content_type: String,
}

fn default_content_type() -> String {
    "application/octet-stream".to_owned()
}

fn handle(ctx: Context, req: Request) -> Action {
    let p: Params = match ctx.params() {
        Ok(p) => p,
        Err(e) => {
            return Action::deny(500, &format!("{NAME}: bad params: {e}"))
                .header("x-egret-handler", NAME)
        }
    };
    let key = p.key.unwrap_or_else(|| req.path().to_owned());
    match kv::get(&key) {
        Some(body) => Action::respond(200)
            .header("content-type", &p.content_type)
            .header("x-egret-handler", NAME)
            .body(body),
        None => Action::deny(404, &format!("egret: no stored response for {key}"))
            .header("x-egret-handler", NAME),
    }
}

egret_handler::export!(handle);
