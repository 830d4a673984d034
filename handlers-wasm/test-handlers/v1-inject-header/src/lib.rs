//! `v1-inject-header`: `inject-header` as a component of `egret:handler@0.1.0`, written against
//! the frozen WIT (`handlers-wasm/wit-0.1.0`) with wit-bindgen directly, the way handlers were
//! built before 0.2.0. egret's tests load it to show such components keep working unchanged.
//! Params: `{"header": NAME, "secret": SECRET, "template": "Bearer {}"}`; sets
//! `x-egret-handler: v1-inject-header`.

// Generated code: the lints are for the hand-written part.
#[allow(clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit-0.1.0",
        world: "handler",
        pub_export_macro: true,
    });
}
use bindings::*;

use bindings::egret::handler::types::{ForwardSpec, HeaderOp, HeaderValue};

#[derive(serde::Deserialize)]
struct Params {
    header: String,
    secret: String,
    #[serde(default)]
    template: Option<String>,
}

struct V1;

impl Guest for V1 {
    fn handle(ctx: Context, _req: RequestHead) -> Action {
        let p: Params = match serde_json::from_str(&ctx.params_json) {
            Ok(p) => p,
            Err(e) => {
                return Action::Respond(bindings::egret::handler::types::ResponseSpec {
                    status: 500,
                    headers: vec![],
                    body: format!("bad params: {e}").into_bytes(),
                })
            }
        };
        let value = match p.template {
            Some(t) => HeaderValue::SecretTemplate((t, p.secret)),
            None => HeaderValue::Secret(p.secret),
        };
        Action::Forward(ForwardSpec {
            set_headers: vec![
                HeaderOp {
                    name: p.header,
                    value,
                },
                HeaderOp {
                    name: "x-egret-handler".into(),
                    value: HeaderValue::Literal(b"v1-inject-header".to_vec()),
                },
            ],
            remove_headers: vec![],
            path_with_query: None,
        })
    }
}

export!(V1 with_types_in bindings);
