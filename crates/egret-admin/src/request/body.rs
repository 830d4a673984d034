//! Request bodies: which endpoints read one and how much, and their validation into a
//! [`Command`] (JSON objects into policy changes, policy files, module bytes).
//!
//! A refusal names the problem precisely enough to fix it (line and column of bad JSON or
//! TOML, which list is empty), except for a secret's body: serde's messages can quote the
//! value, so a refused secret is answered with fixed text only.

use bytes::Bytes;
use egret_policy::{BindingConfig, HandlerConfig, PolicyConfig, PolicyError};
use http::StatusCode;
use serde::de::DeserializeOwned;

use super::route::{self, Op};
use super::{Command, Rejection, RequestHead};
use crate::api::{
    ErrorCode, HostListChange, InternetRequest, OutboundByHostRequest, RemoveHostsRequest,
    SecretRequest,
};
use crate::control::{Change, ControlError};
use crate::server::ServerOptions;
use crate::shadow::ShadowOp;

/// Which body an endpoint reads, and so which limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// None: the body, if any, is ignored and never read.
    None,
    /// JSON or TOML, at most [`ServerOptions::json_body_limit`].
    Text,
    /// A module upload, at most [`ServerOptions::module_body_limit`].
    Module,
}

impl BodyKind {
    /// The largest body accepted, 0 for [`BodyKind::None`].
    pub fn limit(self, opts: &ServerOptions) -> usize {
        match self {
            BodyKind::None => 0,
            BodyKind::Text => opts.json_body_limit,
            BodyKind::Module => opts.module_body_limit,
        }
    }
}

/// The answer to a body over `limit`; the connection is closed since the rest is not drained.
pub(crate) fn payload_too_large(limit: usize) -> Rejection {
    let mut f = Rejection::new(
        ErrorCode::PayloadTooLarge,
        format!("the body is larger than this endpoint's limit of {limit} bytes"),
    );
    f.close = true;
    f
}

impl RequestHead {
    /// Which body to read for this request.
    pub fn body_kind(&self) -> BodyKind {
        match self.op {
            Op::PutPolicy
            | Op::SetOutbound
            | Op::SetOutboundByHost
            | Op::RemoveOutboundByHost
            | Op::AllowedHosts
            | Op::DeniedHosts
            | Op::Internet
            | Op::SetHandler(_)
            | Op::SetSecret(_)
            | Op::Shadow(route::ShadowOp::Load) => BodyKind::Text,
            Op::UploadModule(_) => BodyKind::Module,
            _ => BodyKind::None,
        }
    }

    /// Validates the body (and the query) and says what to do. The body's size is the
    /// caller's to bound ([`BodyKind::limit`]).
    pub fn command(self, body: Bytes) -> Result<Command, Rejection> {
        let ifg = self.if_generation;
        let apply = |change| {
            Ok(Command::Apply {
                change,
                if_generation: ifg,
            })
        };
        match self.op {
            Op::Health => Ok(Command::Health),
            Op::Pending => Ok(Command::Pending),
            Op::Approve(id) => route::scope_query(&self.query).map(|s| Command::Decide {
                id,
                approve: Some(s),
            }),
            Op::Deny(id) => Ok(Command::Decide { id, approve: None }),
            Op::Status => Ok(Command::Status),
            Op::GetPolicy => {
                route::policy_query(&self.query).map(|toml| Command::GetPolicy { toml })
            }
            Op::PutPolicy => apply(Change::ReplacePolicy(Box::new(parse_policy(
                &body, self.toml,
            )?))),
            Op::SetOutbound => apply(Change::SetOutbound(Some(parse_json::<BindingConfig>(
                &body,
            )?))),
            Op::ClearOutbound => apply(Change::SetOutbound(None)),
            Op::SetOutboundByHost => {
                let routes = parse_json::<OutboundByHostRequest>(&body)?.routes;
                apply(Change::SetOutboundByHost(non_empty(routes, NO_ROUTES)?))
            }
            Op::RemoveOutboundByHost => {
                let hosts = parse_json::<RemoveHostsRequest>(&body)?.hosts;
                apply(Change::RemoveOutboundByHost(non_empty(hosts, NO_HOSTS)?))
            }
            op @ (Op::AllowedHosts | Op::DeniedHosts) => {
                let b: HostListChange = parse_json(&body)?;
                if b.add.is_empty() && b.remove.is_empty() {
                    return Err(Rejection::new(
                        ErrorCode::BadRequest,
                        "nothing to change: give \"add\" and/or \"remove\" host patterns",
                    ));
                }
                let (add, remove) = (b.add, b.remove);
                apply(if op == Op::AllowedHosts {
                    Change::AllowedHosts { add, remove }
                } else {
                    Change::DeniedHosts { add, remove }
                })
            }
            Op::Internet => {
                let b: InternetRequest = parse_json(&body)?;
                apply(Change::SetInternet(b.enabled))
            }
            Op::SetHandler(name) => {
                let config: HandlerConfig = parse_json(&body)?;
                apply(Change::SetHandler {
                    name,
                    config: Box::new(config),
                })
            }
            Op::RemoveHandler(name) => apply(Change::RemoveHandler(name)),
            Op::Modules => Ok(Command::Modules),
            Op::UploadModule(name) => {
                if !body.starts_with(b"\0asm") {
                    return Err(Rejection::new(
                        ErrorCode::BadRequest,
                        "the body is not a WebAssembly module (it must start with \\0asm); send the .wasm file's bytes with content-type application/wasm",
                    ));
                }
                Ok(Command::UploadModule {
                    name,
                    bytes: body,
                    if_generation: ifg,
                })
            }
            Op::Secrets => Ok(Command::Secrets),
            Op::SetSecret(name) => {
                let b = parse_secret(&body)?;
                apply(Change::SetSecret {
                    name,
                    value: b.value,
                })
            }
            Op::RemoveSecret(name) => apply(Change::RemoveSecret(name)),
            Op::Ca => Ok(Command::Ca),
            Op::Metrics => Ok(Command::Metrics),
            Op::Audit => route::audit_query(&self.query).map(Command::Audit),
            Op::Shadow(op) => {
                let op = match op {
                    route::ShadowOp::Load => {
                        ShadowOp::Load(Box::new(parse_policy(&body, self.toml)?))
                    }
                    route::ShadowOp::Report => ShadowOp::Report,
                    route::ShadowOp::Promote => ShadowOp::Promote,
                    route::ShadowOp::Drop => ShadowOp::Drop,
                };
                Ok(Command::Shadow {
                    op,
                    if_generation: ifg,
                })
            }
        }
    }
}

/// The refusal of `PUT /v1/outbound-by-host` without routes.
const NO_ROUTES: &str =
    "routes is empty; give at least one {\"hosts\": [...], \"handler\": \"...\"}";
/// The refusal of `DELETE /v1/outbound-by-host` without hosts.
const NO_HOSTS: &str = "hosts is empty; name the host patterns whose routes to remove";

/// `list`, or a `bad_request` refusal with `message` when it is empty: a change naming
/// nothing is a client's mistake, not a no-op to accept silently.
fn non_empty<T>(list: Vec<T>, message: &'static str) -> Result<Vec<T>, Rejection> {
    if list.is_empty() {
        return Err(Rejection::new(ErrorCode::BadRequest, message));
    }
    Ok(list)
}

/// An `invalid_json` refusal pointing at where serde stopped.
fn json_failure(e: &serde_json::Error, message: String) -> Rejection {
    let mut f = Rejection::new(ErrorCode::InvalidJson, message);
    f.error.line = Some(e.line().max(1));
    f.error.column = Some(e.column().max(1));
    f
}

/// serde's derived structs also accept the sequence form (`[true]` for `{"enabled": true}`);
/// the API documents objects only, so arrays are refused up front.
fn refuse_array(body: &[u8]) -> Result<(), Rejection> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let mut f = Rejection::new(
            ErrorCode::InvalidJson,
            "expected a JSON object, found an array",
        );
        f.error.line = Some(1);
        f.error.column = Some(1);
        return Err(f);
    }
    Ok(())
}

/// The body as the JSON object `T`.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Rejection> {
    refuse_array(body)?;
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_eof() && body.iter().all(u8::is_ascii_whitespace) {
            "the body is empty; this endpoint expects a JSON object".to_owned()
        } else {
            format!("invalid request body: {e}")
        };
        json_failure(&e, what)
    })
}

/// Like [`parse_json`] but never repeats serde's message: for some inputs (a bare string, a
/// value of the wrong type) that message quotes the value, which here is the secret.
fn parse_secret(body: &[u8]) -> Result<SecretRequest, Rejection> {
    refuse_array(body)?;
    serde_json::from_slice(body).map_err(|e| {
        json_failure(
            &e,
            format!(
                "invalid request body ({:?} error); expected {{\"value\": \"...\"}} with a string value and no other field",
                e.classify()
            )
            .to_lowercase(),
        )
    })
}

/// A whole policy, TOML or JSON by the content-type (`toml`) or, without one, by its first
/// character.
fn parse_policy(body: &[u8], toml: Option<bool>) -> Result<PolicyConfig, Rejection> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Rejection::new(ErrorCode::BadRequest, "the policy is not UTF-8 text"))?;
    // Without a content-type, a body starting with `{` is JSON (TOML cannot start with one).
    let toml = toml.unwrap_or_else(|| !text.trim_start().starts_with('{'));
    let parsed = if toml {
        PolicyConfig::from_toml(text, "request body")
    } else {
        PolicyConfig::from_json(text, "request body")
    };
    parsed.map_err(|e| match e {
        PolicyError::Parse {
            line,
            column,
            message,
            hint,
            ..
        } => {
            let code = if toml {
                ErrorCode::InvalidPolicy
            } else {
                ErrorCode::InvalidJson
            };
            let mut f = Rejection::new(
                code,
                format!("invalid policy at line {line} column {column}: {message}"),
            )
            .status(StatusCode::BAD_REQUEST);
            f.error.line = Some(line);
            f.error.column = Some(column);
            f.error.hint = hint;
            f
        }
        other => ControlError::from(other).into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_parse_errors_do_not_quote_the_value() {
        for body in [
            r#""hunter2""#,
            r#"{"value": "hunter2", "x": 1}"#,
            r#"{"value": ["hunter2"]}"#,
        ] {
            let f = parse_secret(body.as_bytes()).unwrap_err();
            let shown = serde_json::to_string(&f.error).unwrap();
            assert!(!shown.contains("hunter2"), "{shown}");
            assert_eq!(f.error.code, ErrorCode::InvalidJson);
        }
    }
}
