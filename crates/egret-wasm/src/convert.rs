//! Between the generated types of each WIT version and the host's own model
//! ([`crate::wit_types`]). 0.1.0 is a subset of 0.2.0: its request head moves over field by
//! field, its actions map onto the same variants.
use crate::bindings::{v1, v2};
use crate::wit_types as m;

use v1::egret::handler::types as t1;
use v2::egret::handler::types as t2;

/// The request head of 0.2.0 as the 0.1.0 type (same fields; moved, not copied).
pub(crate) fn head_v1(h: t2::RequestHead) -> t1::RequestHead {
    t1::RequestHead {
        method: h.method,
        scheme: h.scheme,
        authority: h.authority,
        path_with_query: h.path_with_query,
        headers: h.headers,
    }
}

pub(crate) fn context_v1(c: t2::Context) -> t1::Context {
    t1::Context {
        handler_name: c.handler_name,
        sandbox_id: c.sandbox_id,
        params_json: c.params_json,
    }
}

impl From<t1::HeaderValue> for m::HeaderValue {
    fn from(v: t1::HeaderValue) -> Self {
        match v {
            t1::HeaderValue::Literal(b) => m::HeaderValue::Literal(b),
            t1::HeaderValue::Secret(s) => m::HeaderValue::Secret(s),
            t1::HeaderValue::SecretTemplate(t) => m::HeaderValue::SecretTemplate(t),
        }
    }
}

impl From<t1::Action> for m::Action {
    fn from(a: t1::Action) -> Self {
        match a {
            t1::Action::Forward(f) => m::Action::Forward(m::ForwardSpec {
                set_headers: f
                    .set_headers
                    .into_iter()
                    .map(|op| m::HeaderOp {
                        name: op.name,
                        value: op.value.into(),
                    })
                    .collect(),
                remove_headers: f.remove_headers,
                path_with_query: f.path_with_query,
                body: None,
            }),
            t1::Action::Respond(r) => m::Action::Respond(m::ResponseSpec {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
        }
    }
}

impl From<t2::Encoding> for m::Encoding {
    fn from(e: t2::Encoding) -> Self {
        match e {
            t2::Encoding::Raw => m::Encoding::Raw,
            t2::Encoding::Base64 => m::Encoding::Base64,
            t2::Encoding::Base64url => m::Encoding::Base64url,
            t2::Encoding::Percent => m::Encoding::Percent,
            t2::Encoding::JsonString => m::Encoding::JsonString,
            t2::Encoding::Hex => m::Encoding::Hex,
        }
    }
}

impl From<t2::ValuePart> for m::ValuePart {
    fn from(p: t2::ValuePart) -> Self {
        match p {
            t2::ValuePart::Literal(b) => m::ValuePart::Literal(b),
            t2::ValuePart::Secret(s) => m::ValuePart::Secret(m::SecretRef {
                name: s.name,
                encoding: s.encoding.into(),
            }),
        }
    }
}

pub(crate) fn parts(p: Vec<t2::ValuePart>) -> Vec<m::ValuePart> {
    p.into_iter().map(Into::into).collect()
}

impl From<t2::HeaderValue> for m::HeaderValue {
    fn from(v: t2::HeaderValue) -> Self {
        match v {
            t2::HeaderValue::Literal(b) => m::HeaderValue::Literal(b),
            t2::HeaderValue::Secret(s) => m::HeaderValue::Secret(s),
            t2::HeaderValue::SecretTemplate(t) => m::HeaderValue::SecretTemplate(t),
            t2::HeaderValue::Parts(p) => m::HeaderValue::Parts(parts(p)),
            t2::HeaderValue::BasicAuth(c) => m::HeaderValue::BasicAuth(m::BasicCredentials {
                user: parts(c.user),
                password: parts(c.password),
            }),
        }
    }
}

pub(crate) fn header_ops(ops: Vec<t2::HeaderOp>) -> Vec<m::HeaderOp> {
    ops.into_iter()
        .map(|op| m::HeaderOp {
            name: op.name,
            value: op.value.into(),
        })
        .collect()
}

fn response_spec(r: t2::ResponseSpec) -> m::ResponseSpec {
    m::ResponseSpec {
        status: r.status,
        headers: r.headers,
        body: r.body,
    }
}

impl From<t2::Action> for m::Action {
    fn from(a: t2::Action) -> Self {
        match a {
            t2::Action::Forward(f) => m::Action::Forward(m::ForwardSpec {
                set_headers: header_ops(f.set_headers),
                remove_headers: f.remove_headers,
                path_with_query: f.path_with_query,
                body: f.body.map(parts),
            }),
            t2::Action::Respond(r) => m::Action::Respond(response_spec(r)),
        }
    }
}

impl From<t2::ResponseAction> for m::ResponseAction {
    fn from(a: t2::ResponseAction) -> Self {
        match a {
            t2::ResponseAction::Pass(e) => m::ResponseAction::Pass(m::ResponseEdits {
                set_headers: e.set_headers,
                remove_headers: e.remove_headers,
                body: e.body,
            }),
            t2::ResponseAction::Replace(r) => m::ResponseAction::Replace(response_spec(r)),
        }
    }
}
