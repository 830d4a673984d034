//! `inject-header`: forwards every request with one header set from a secret
//! the handler never sees.
//!
//! Params: `{"header": "authorization", "secret": "github-token", "template": "Bearer {}"}`
//! (`template` defaults to `"{}"`, i.e. the raw secret value). Like every
//! example handler it also sets `x-egret-handler: inject-header` on the
//! upstream request, so test servers can echo which handler ran.

use egret_handler::{Action, Context, Request};

const NAME: &str = "inject-header";

#[derive(serde::Deserialize)]
struct Params {
    header: String,
    secret: String,
    #[serde(default = "default_template")]
    template: String,
}

fn default_template() -> String {
    "{}".to_owned()
}

fn handle(ctx: Context, _req: Request) -> Action {
    let p: Params = match ctx.params() {
        Ok(p) => p,
        Err(e) => {
            return Action::deny(500, &format!("{NAME}: bad params: {e}"))
                .header("x-egret-handler", NAME)
        }
    };
    Action::forward()
        .set_header("x-egret-handler", NAME)
        .set_header_secret(&p.header, &p.template, &p.secret)
}

egret_handler::export!(handle);
