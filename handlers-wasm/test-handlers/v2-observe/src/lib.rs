//! `v2-observe`: a component of `egret:handler@0.2.0`, written against the frozen WIT
//! (`handlers-wasm/wit-0.2.0`) with wit-bindgen directly. egret's tests load it to show such
//! components keep working unchanged: it forwards, marks the response
//! (`x-v2-observe: seen`) and counts the observed body bytes in kv (`v2-observe/bytes`).

// Generated code: the lints are for the hand-written part.
#[allow(clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit-0.2.0",
        world: "handler",
        pub_export_macro: true,
    });
}
use bindings::*;

use bindings::egret::handler::host;
use bindings::egret::handler::types::{ForwardSpec, ResponseEdits};

struct V2;

impl Guest for V2 {
    fn handle(_ctx: Context, _req: Request) -> Action {
        Action::Forward(ForwardSpec {
            set_headers: vec![],
            remove_headers: vec![],
            path_with_query: None,
            body: None,
        })
    }

    fn on_response(_ctx: Context, _resp: Response) -> ResponseAction {
        ResponseAction::Pass(ResponseEdits {
            set_headers: vec![("x-v2-observe".into(), b"seen".to_vec())],
            remove_headers: vec![],
            body: None,
        })
    }

    fn on_response_chunk(_ctx: Context, chunk: Vec<u8>) {
        let _ = host::kv_incr("v2-observe/bytes", chunk.len() as i64, None);
    }

    fn on_response_end(_ctx: Context) {}
}

export!(V2 with_types_in bindings);
