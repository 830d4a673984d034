//! The admin API's request parsing and validation, on raw HTTP/1.1 requests: the request line
//! and headers are split by httparse (as hyper does), then routed and validated by
//! `egret_admin::parse_request`, the function the server itself calls. Reaching the socket
//! takes root, but a control plane that forwards user input (a handler name, a host pattern, a
//! policy file) must not be able to crash egret or slip a malformed change through.
//!
//! Invariants: no panic; a refusal is a 4xx with a stable code, a message, the code's own status
//! (bar the documented 400 for a TOML parse error) and `allow` exactly on a 405, and its JSON
//! body parses back to the same error; a refused secret body is answered with fixed text only; an
//! accepted command, written back as a request the way a client would, parses to the same
//! command.
#![no_main]
use egret_admin::{
    AuditFilter, Change, Command, ErrorCode, ErrorResponse, HostListChange, InternetRequest,
    OutboundByHostRequest, RemoveHostsRequest, SecretRequest, ServerOptions, ShadowOp,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

/// Small limits so that the size checks are reachable with small inputs.
fn opts() -> ServerOptions {
    ServerOptions {
        json_body_limit: 4096,
        module_body_limit: 256,
        ..ServerOptions::default()
    }
}

struct Req {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Splits a raw request the way hyper does before the server sees it; `None` where hyper
/// would refuse the request itself.
fn split(data: &[u8]) -> Option<Req> {
    let mut hs = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Request::new(&mut hs);
    let httparse::Status::Complete(n) = r.parse(data).ok()? else {
        return None;
    };
    let method = Method::from_bytes(r.method?.as_bytes()).ok()?;
    let uri: Uri = r.path?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for h in r.headers.iter() {
        headers.append(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    Some(Req {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body: data[n..].to_vec(),
    })
}

fn parse(r: &Req) -> Result<Command, egret_admin::Rejection> {
    egret_admin::parse_request(
        &r.method,
        &r.path,
        r.query.as_deref(),
        &r.headers,
        &r.body,
        &opts(),
    )
}

/// The request a client sends for `cmd` (cf. `AdminClient`).
fn encode(cmd: &Command) -> Req {
    let mut headers = HeaderMap::new();
    fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
        serde_json::to_vec(v).expect("request bodies serialise")
    }
    let (method, path, query, body, ifg): (Method, String, Option<String>, Vec<u8>, Option<u64>) =
        match cmd {
            Command::Health => (Method::GET, "/v1/health".into(), None, vec![], None),
            Command::Status => (Method::GET, "/v1/status".into(), None, vec![], None),
            Command::GetPolicy { toml } => (
                Method::GET,
                "/v1/policy".into(),
                toml.then(|| "format=toml".to_owned()),
                vec![],
                None,
            ),
            Command::Modules => (Method::GET, "/v1/modules".into(), None, vec![], None),
            Command::Secrets => (Method::GET, "/v1/secrets".into(), None, vec![], None),
            Command::Ca => (Method::GET, "/v1/ca".into(), None, vec![], None),
            Command::Metrics => (Method::GET, "/metrics".into(), None, vec![], None),
            Command::Audit(f) => {
                let q = f.to_query();
                (Method::GET, "/v1/audit".into(), (!q.is_empty()).then_some(q), vec![], None)
            }
            Command::Pending => (Method::GET, "/v1/pending".into(), None, vec![], None),
            Command::Decide { id, approve } => match approve {
                Some(scope) => (
                    Method::POST,
                    format!("/v1/pending/{id}/approve"),
                    Some(format!("scope={}", scope.as_str())),
                    vec![],
                    None,
                ),
                None => (Method::POST, format!("/v1/pending/{id}/deny"), None, vec![], None),
            },
            Command::UploadModule {
                name,
                bytes,
                if_generation,
            } => (
                Method::PUT,
                format!("/v1/modules/{name}"),
                None,
                bytes.to_vec(),
                *if_generation,
            ),
            Command::Shadow { op, if_generation } => {
                let (m, p, b) = match op {
                    ShadowOp::Load(cfg) => {
                        headers.insert(
                            http::header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        (Method::PUT, "/v1/policy/shadow", json(cfg))
                    }
                    ShadowOp::Report => (Method::GET, "/v1/policy/shadow", vec![]),
                    ShadowOp::Promote => (Method::POST, "/v1/policy/shadow/promote", vec![]),
                    ShadowOp::Drop => (Method::DELETE, "/v1/policy/shadow", vec![]),
                };
                (m, p.into(), None, b, *if_generation)
            }
            Command::Apply {
                change,
                if_generation,
            } => {
                let (m, p, b) = match change {
                    Change::SetOutbound(Some(b)) => (Method::PUT, "/v1/outbound".into(), json(b)),
                    Change::SetOutbound(None) => (Method::DELETE, "/v1/outbound".into(), vec![]),
                    Change::SetOutboundByHost(routes) => (
                        Method::PUT,
                        "/v1/outbound-by-host".into(),
                        json(&OutboundByHostRequest {
                            routes: routes.clone(),
                        }),
                    ),
                    Change::RemoveOutboundByHost(hosts) => (
                        Method::DELETE,
                        "/v1/outbound-by-host".into(),
                        json(&RemoveHostsRequest {
                            hosts: hosts.clone(),
                        }),
                    ),
                    Change::AllowedHosts { add, remove } => (
                        Method::POST,
                        "/v1/allowed-hosts".into(),
                        json(&HostListChange {
                            add: add.clone(),
                            remove: remove.clone(),
                        }),
                    ),
                    Change::DeniedHosts { add, remove } => (
                        Method::POST,
                        "/v1/denied-hosts".into(),
                        json(&HostListChange {
                            add: add.clone(),
                            remove: remove.clone(),
                        }),
                    ),
                    Change::SetInternet(enabled) => (
                        Method::PUT,
                        "/v1/internet".into(),
                        json(&InternetRequest { enabled: *enabled }),
                    ),
                    Change::SetHandler { name, config } => {
                        (Method::PUT, format!("/v1/handlers/{name}"), json(config))
                    }
                    Change::RemoveHandler(name) => {
                        (Method::DELETE, format!("/v1/handlers/{name}"), vec![])
                    }
                    Change::SetSecret { name, value } => (
                        Method::PUT,
                        format!("/v1/secrets/{name}"),
                        json(&SecretRequest {
                            value: value.clone(),
                        }),
                    ),
                    Change::RemoveSecret(name) => {
                        (Method::DELETE, format!("/v1/secrets/{name}"), vec![])
                    }
                    Change::ReplacePolicy(cfg) => {
                        headers.insert(
                            http::header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        (Method::PUT, "/v1/policy".into(), json(cfg))
                    }
                };
                (m, p, None, b, *if_generation)
            }
        };
    if let Some(g) = ifg {
        headers.insert("if-generation", HeaderValue::from(g));
    }
    Req {
        method,
        path,
        query,
        headers,
        body,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = split(data) else {
        return;
    };
    match parse(&req) {
        Err(rej) => {
            let e = &rej.error;
            assert!(rej.status.is_client_error(), "{} for {e:?}", rej.status);
            assert_ne!(e.code, ErrorCode::Unknown);
            assert!(!e.message.trim().is_empty(), "{e:?}");
            let toml_parse_error = e.code == ErrorCode::InvalidPolicy && e.line.is_some();
            let want = if toml_parse_error {
                http::StatusCode::BAD_REQUEST
            } else {
                e.code.status()
            };
            assert_eq!(rej.status, want, "{e:?}");
            assert_eq!(rej.allow.is_some(), e.code == ErrorCode::MethodNotAllowed);
            assert_eq!(rej.close, e.code == ErrorCode::PayloadTooLarge);
            let wire = serde_json::to_string(&egret_admin::ErrorResponse {
                error: (**e).clone(),
            })
            .unwrap();
            let back: ErrorResponse = serde_json::from_str(&wire).unwrap();
            assert_eq!(&back.error, &**e);
            if req.method == Method::PUT
                && req.path.starts_with("/v1/secrets/")
                && e.code == ErrorCode::InvalidJson
            {
                // The body holds a secret: its refusal is drawn from fixed text, so no part of
                // the value (however it was malformed) can be echoed.
                let fixed = e.message == "expected a JSON object, found an array"
                    || ["io", "syntax", "data", "eof"].iter().any(|k| {
                        e.message
                            == format!(
                                "invalid request body ({k} error); expected {{\"value\": \"...\"}} with a string value and no other field"
                            )
                    });
                assert!(fixed, "secret body refusal is not fixed text: {wire}");
                assert!(e.problems.is_empty() && e.hint.is_none(), "{wire}");
            }
        }
        Ok(cmd) => {
            if let Command::Apply {
                change: Change::ReplacePolicy(_),
                ..
            } = &cmd
            {
                // The policy's own round trip (TOML/JSON) is the `policy` target's business;
                // only what the admin layer adds is checked here.
                return;
            }
            if let Command::Audit(AuditFilter {
                sandbox: Some(s), ..
            }) = &cmd
            {
                assert!(!s.is_empty());
            }
            let again = encode(&cmd);
            match parse(&again) {
                Ok(cmd2) => assert_eq!(cmd, cmd2, "round trip changed the command"),
                Err(rej) => panic!("{cmd:?} written back is refused: {:?}", rej.error),
            }
        }
    }
});
