//! `per-sandbox-token`: each sandbox gets its own credential. The kv store of
//! the requesting sandbox maps the key `token-secret` (configurable) to the
//! *name* of a secret, which is injected as `authorization: Bearer {}`.
//! Without a kv entry the request gets `403` naming the sandbox.
//!
//! Params (all optional): `{"key": "token-secret", "header": "authorization",
//! "template": "Bearer {}"}`.

use egret_handler::{kv, Action, Context, Request};

const NAME: &str = "per-sandbox-token";

#[derive(serde::Deserialize)]
struct Params {
    #[serde(default = "default_key")]
    key: String,
    #[serde(default = "default_header")]
    header: String,
    #[serde(default = "default_template")]
    template: String,
}

fn default_key() -> String {
    "token-secret".to_owned()
}
fn default_header() -> String {
    "authorization".to_owned()
}
fn default_template() -> String {
    "Bearer {}".to_owned()
}

fn handle(ctx: Context, _req: Request) -> Action {
    let p: Params = match ctx.params() {
        Ok(p) => p,
        Err(e) => {
            return Action::deny(500, &format!("{NAME}: bad params: {e}"))
                .header("x-egret-handler", NAME)
        }
    };
    match kv::get_string(&p.key) {
        Some(secret) if !secret.is_empty() => Action::forward()
            .set_header("x-egret-handler", NAME)
            .set_header_secret(&p.header, &p.template, secret.trim()),
        _ => Action::deny(
            403,
            &format!(
                "egret: no token configured for sandbox {} (kv key {})",
                ctx.sandbox_id(),
                p.key
            ),
        )
        .header("x-egret-handler", NAME),
    }
}

egret_handler::export!(handle);
