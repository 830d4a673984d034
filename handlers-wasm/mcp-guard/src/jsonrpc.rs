//! The request side: one HTTP body of JSON-RPC (a message or a batch) checked against the
//! [`Rules`], and the JSON-RPC error answers a refusal becomes, in JSON or as a server-sent
//! event. Pure: unit-tested on the host.

use serde_json::{json, Value};

use crate::rules::{always_passes, Refusal, Rules, INVALID_PARAMS};

/// JSON-RPC: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: the JSON is not a valid request.
pub const INVALID_REQUEST: i64 = -32600;

/// Prefix of every message this guard writes, so a client shows who refused.
pub const GUARD: &str = "mcp-guard";

/// How an answer is written: what the client's `Accept` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `text/event-stream`: one `message` event.
    Sse,
}

impl Format {
    /// JSON when the client takes it (or says nothing), else an event stream when it takes
    /// that: streamable HTTP clients accept both and read either.
    pub fn for_accept(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Json;
        };
        let takes = |t: &str| {
            accept.split(',').any(|m| {
                let m = m.split(';').next().unwrap_or("").trim();
                m.eq_ignore_ascii_case(t)
            })
        };
        if takes("application/json") || takes("*/*") || takes("application/*") {
            Format::Json
        } else if takes("text/event-stream") {
            Format::Sse
        } else {
            Format::Json
        }
    }

    /// The `content-type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Sse => "text/event-stream",
        }
    }

    /// The body of an answer carrying `msg` (a JSON-RPC message or batch).
    pub fn body(self, msg: &Value) -> Vec<u8> {
        match self {
            Format::Json => msg.to_string().into_bytes(),
            Format::Sse => format!("event: message\ndata: {msg}\n\n").into_bytes(),
        }
    }
}

/// One message of the body, as the audit and logs name it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The JSON-RPC method (`-` for a response or an invalid element).
    pub method: String,
    /// The tool of a `tools/call`.
    pub tool: Option<String>,
    /// Why it was refused, when it was.
    pub refused: Option<Refusal>,
}

/// What the request's answer must be checked for in the response phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expect {
    /// Ids of `tools/list` requests (filtered when `filter_lists` is on).
    pub lists: Vec<Value>,
    /// Ids of `initialize` requests (checked when `pin_server` is set).
    pub inits: Vec<Value>,
    /// Every answer that has the shape of a `tools/list` result (`result.tools`, a list) or
    /// an `initialize` result (`result.serverInfo`) is checked, whatever its id: on a
    /// server-push stream (the `GET /sse` of the HTTP+SSE transport) the answers belong to
    /// requests other instances saw.
    pub by_shape: bool,
}

impl Expect {
    /// Nothing to check.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.inits.is_empty() && !self.by_shape
    }

    /// Check answers by their shape (see [`Expect::by_shape`]), for what `rules` asks.
    pub fn by_shape(rules: &crate::rules::Rules) -> Expect {
        Expect {
            by_shape: rules.filter_lists || rules.pin_server.is_some(),
            ..Expect::default()
        }
    }
}

/// The decision on one request body.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Forward it; check the answer for `expect`.
    Pass { calls: Vec<Call>, expect: Expect },
    /// Answer it here with `status` and this JSON-RPC message or batch.
    Refuse {
        calls: Vec<Call>,
        status: u16,
        answer: Value,
    },
}

/// A JSON-RPC error message.
pub fn error(id: Value, code: i64, message: &str, data: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message, "data": data}})
}

fn refusal_data(call: &Call, r: &Refusal) -> Value {
    let mut d = json!({"guard": GUARD, "rule": r.rule, "method": call.method});
    if let Some(t) = &call.tool {
        d["tool"] = Value::String(t.clone());
    }
    d
}

/// A malformed element.
fn invalid(code: i64, why: String) -> Call {
    Call {
        method: "-".into(),
        tool: None,
        refused: Some(Refusal {
            code,
            message: why,
            rule: "jsonrpc".into(),
        }),
    }
}

/// Check one message; `expect` collects the ids whose answers are checked.
fn check_message(msg: &Value, rules: &Rules, expect: &mut Expect) -> Call {
    let Value::Object(m) = msg else {
        return invalid(
            INVALID_REQUEST,
            "a JSON-RPC message must be a JSON object".into(),
        );
    };
    if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(
            INVALID_REQUEST,
            "a JSON-RPC message must have \"jsonrpc\": \"2.0\"".into(),
        );
    }
    let id = m.get("id");
    if let Some(id) = id {
        if !matches!(id, Value::String(_) | Value::Number(_) | Value::Null) {
            return invalid(
                INVALID_REQUEST,
                "a JSON-RPC id must be a string or a number".into(),
            );
        }
    }
    let method = match m.get("method") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return invalid(INVALID_REQUEST, "\"method\" must be a string".into()),
        // The client's answer to a server request (sampling, elicitation, roots).
        None if m.contains_key("result") || m.contains_key("error") => {
            return Call {
                method: "-".into(),
                tool: None,
                refused: None,
            }
        }
        None => {
            return invalid(
                INVALID_REQUEST,
                "a JSON-RPC message needs a \"method\" (or a \"result\" or \"error\")".into(),
            )
        }
    };
    let mut call = Call {
        method: method.to_owned(),
        tool: None,
        refused: None,
    };
    let id = id.cloned().unwrap_or(Value::Null);
    if always_passes(method) {
        match method {
            "tools/list" if rules.filter_lists => expect.lists.push(id),
            "initialize" if rules.pin_server.is_some() => expect.inits.push(id),
            _ => {}
        }
        return call;
    }
    if method != "tools/call" {
        call.refused = rules.check_method(method).err();
        return call;
    }
    let params = m.get("params");
    let Some(tool) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
        call.refused = Some(Refusal {
            code: INVALID_PARAMS,
            message: "tools/call needs params.name, the tool's name as a string".into(),
            rule: "jsonrpc".into(),
        });
        return call;
    };
    call.tool = Some(tool.to_owned());
    call.refused = rules
        .check_call(tool, params.and_then(|p| p.get("arguments")))
        .err();
    call
}

/// The id of an element, for its error answer (`null` when it has none usable).
fn id_of(msg: &Value) -> Value {
    match msg.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => Value::Null,
    }
}

/// Whether an element expects an answer: a request (a method and an id).
fn is_request(msg: &Value) -> bool {
    msg.get("method").is_some()
        && matches!(msg.get("id"), Some(Value::String(_) | Value::Number(_)))
}

/// The decision on a `POST` body of JSON-RPC.
pub fn check_body(body: &[u8], rules: &Rules) -> Verdict {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("{GUARD}: the request body is not valid JSON ({e}); an MCP client sends a JSON-RPC message or batch");
            let answer = error(Value::Null, PARSE_ERROR, &msg, json!({"guard": GUARD}));
            let call = invalid(PARSE_ERROR, msg);
            return Verdict::Refuse {
                calls: vec![call],
                status: 400,
                answer,
            };
        }
    };
    let mut expect = Expect::default();
    let batch = match &parsed {
        Value::Array(items) if items.is_empty() => {
            let msg = format!("{GUARD}: an empty JSON-RPC batch is not a valid request");
            return Verdict::Refuse {
                calls: vec![invalid(INVALID_REQUEST, msg.clone())],
                status: 400,
                answer: error(Value::Null, INVALID_REQUEST, &msg, json!({"guard": GUARD})),
            };
        }
        Value::Array(items) => items.as_slice(),
        single => std::slice::from_ref(single),
    };
    let calls: Vec<Call> = batch
        .iter()
        .map(|m| check_message(m, rules, &mut expect))
        .collect();
    let refused: Vec<(usize, &Call, &Refusal)> = calls
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.refused.as_ref().map(|r| (i, c, r)))
        .collect();
    if refused.is_empty() {
        return Verdict::Pass { calls, expect };
    }
    // A malformed body is the client's error (400); a policy refusal is an answer (200).
    let malformed = refused
        .iter()
        .all(|(_, _, r)| r.rule == "jsonrpc" && r.code == INVALID_REQUEST);
    let status = if malformed { 400 } else { 200 };
    let answer = if !matches!(parsed, Value::Array(_)) {
        let (_, call, r) = refused[0];
        let msg = format!("{GUARD}: {}", r.message);
        let answer = error(id_of(&parsed), r.code, &msg, refusal_data(call, r));
        // A refused message without an id (no answer is expected) still gets one, with
        // an HTTP status saying it was not carried out.
        let status = if malformed || is_request(&parsed) {
            status
        } else {
            403
        };
        return Verdict::Refuse {
            calls,
            status,
            answer,
        };
    } else {
        let named: Vec<String> = refused
            .iter()
            .map(|(i, _, r)| format!("[{i}] {}", r.message))
            .collect();
        let whole = format!(
            "{GUARD}: the batch is refused as a whole because {} of its {} elements {}: {}",
            refused.len(),
            batch.len(),
            if refused.len() == 1 {
                "was refused"
            } else {
                "were refused"
            },
            named.join("; ")
        );
        let mut out = Vec::new();
        for (i, (msg, call)) in batch.iter().zip(&calls).enumerate() {
            match &call.refused {
                Some(r) => {
                    let m = format!("{GUARD}: [{i}] {}", r.message);
                    out.push(error(id_of(msg), r.code, &m, refusal_data(call, r)));
                }
                None if is_request(msg) => {
                    let data = json!({"guard": GUARD, "rule": "batch", "method": call.method});
                    out.push(error(id_of(msg), crate::rules::POLICY_DENIED, &whole, data));
                }
                // Notifications and responses get no answer.
                None => {}
            }
        }
        Value::Array(out)
    };
    Verdict::Refuse {
        calls,
        status,
        answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Params, POLICY_DENIED};

    fn rules(v: Value) -> Rules {
        Rules::compile(serde_json::from_value::<Params>(v).unwrap()).unwrap()
    }

    fn call(id: i64, tool: &str, args: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": tool, "arguments": args}})
    }

    #[test]
    fn an_allowed_call_passes_and_a_denied_one_is_an_error_with_its_id() {
        let r = rules(json!({"allow_tools": ["echo"]}));
        let ok = call(1, "echo", json!({"text": "hi"}));
        let v = check_body(ok.to_string().as_bytes(), &r);
        let Verdict::Pass { calls, expect } = v else {
            panic!("{v:?}")
        };
        assert_eq!(calls[0].tool.as_deref(), Some("echo"));
        assert!(expect.is_empty());

        let bad = call(7, "delete_repo", json!({}));
        let Verdict::Refuse {
            calls,
            status,
            answer,
        } = check_body(bad.to_string().as_bytes(), &r)
        else {
            panic!()
        };
        assert_eq!(status, 200);
        assert_eq!(answer["id"], 7);
        assert_eq!(answer["error"]["code"], POLICY_DENIED);
        assert_eq!(
            answer["error"]["message"],
            "mcp-guard: tool \"delete_repo\" is not in allow_tools"
        );
        assert_eq!(answer["error"]["data"]["tool"], "delete_repo");
        assert_eq!(answer["error"]["data"]["rule"], "allow_tools");
        assert_eq!(calls[0].refused.as_ref().unwrap().rule, "allow_tools");
    }

    #[test]
    fn handshake_notifications_and_listing_always_pass_and_are_remembered() {
        let r = rules(
            json!({"allow_tools": [], "allow_methods": [], "filter_lists": true,
                             "pin_server": "srv"}),
        );
        for (m, id) in [
            ("initialize", json!(0)),
            ("tools/list", json!("a")),
            ("ping", json!(3)),
        ] {
            let body = json!({"jsonrpc": "2.0", "id": id, "method": m});
            assert!(matches!(
                check_body(body.to_string().as_bytes(), &r),
                Verdict::Pass { .. }
            ));
        }
        let n = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert!(matches!(
            check_body(n.to_string().as_bytes(), &r),
            Verdict::Pass { .. }
        ));
        let batch = json!([{"jsonrpc": "2.0", "id": "L", "method": "tools/list"},
                           {"jsonrpc": "2.0", "id": 9, "method": "initialize", "params": {}}]);
        let Verdict::Pass { expect, .. } = check_body(batch.to_string().as_bytes(), &r) else {
            panic!()
        };
        assert_eq!(expect.lists, vec![json!("L")]);
        assert_eq!(expect.inits, vec![json!(9)]);
        // A client's answer to a server request passes.
        let resp = json!({"jsonrpc": "2.0", "id": 4, "result": {}});
        assert!(matches!(
            check_body(resp.to_string().as_bytes(), &r),
            Verdict::Pass { .. }
        ));
        let m = json!({"jsonrpc": "2.0", "id": 5, "method": "resources/read"});
        let Verdict::Refuse { answer, .. } = check_body(m.to_string().as_bytes(), &r) else {
            panic!()
        };
        assert!(answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allow_methods"));
    }

    #[test]
    fn a_batch_with_one_refused_element_is_refused_whole_naming_each() {
        let r = rules(json!({"deny_tools": ["delete_*", "send_*"]}));
        let batch = json!([
            call(1, "read", json!({})),
            call(2, "delete_repo", json!({})),
            {"jsonrpc": "2.0", "method": "notifications/progress"},
            call(3, "send_email", json!({})),
        ]);
        let Verdict::Refuse {
            status,
            answer,
            calls,
        } = check_body(batch.to_string().as_bytes(), &r)
        else {
            panic!()
        };
        assert_eq!(status, 200);
        assert_eq!(calls.len(), 4);
        let out = answer.as_array().unwrap();
        assert_eq!(out.len(), 3, "{answer}");
        assert_eq!(out[0]["id"], 1);
        let whole = out[0]["error"]["message"].as_str().unwrap();
        assert!(
            whole.contains("2 of its 4 elements were refused"),
            "{whole}"
        );
        assert!(whole.contains("[1] tool \"delete_repo\""), "{whole}");
        assert!(whole.contains("[3] tool \"send_email\""), "{whole}");
        assert_eq!(out[1]["id"], 2);
        assert_eq!(out[1]["error"]["data"]["tool"], "delete_repo");
        assert_eq!(out[2]["id"], 3);
        let fine = json!([call(1, "read", json!({})), call(2, "write", json!({}))]);
        assert!(matches!(
            check_body(fine.to_string().as_bytes(), &r),
            Verdict::Pass { .. }
        ));
    }

    #[test]
    fn malformed_bodies_are_refused_clearly() {
        let r = rules(json!({}));
        let Verdict::Refuse { status, answer, .. } = check_body(b"{\"jsonrpc\": \"2.0\", ", &r)
        else {
            panic!()
        };
        assert_eq!(status, 400);
        assert_eq!(answer["error"]["code"], PARSE_ERROR);
        assert_eq!(answer["id"], Value::Null);
        assert!(answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"));
        for (body, why) in [
            ("[]", "empty JSON-RPC batch"),
            ("3", "must be a JSON object"),
            (r#"{"id": 1, "method": "ping"}"#, "\"jsonrpc\": \"2.0\""),
            (
                r#"{"jsonrpc": "2.0", "id": 1, "method": 5}"#,
                "\"method\" must be a string",
            ),
            (
                r#"{"jsonrpc": "2.0", "id": {}, "method": "ping"}"#,
                "id must be",
            ),
            (r#"{"jsonrpc": "2.0", "id": 1}"#, "needs a \"method\""),
        ] {
            let Verdict::Refuse { status, answer, .. } = check_body(body.as_bytes(), &r) else {
                panic!("{body}")
            };
            assert_eq!(status, 400, "{body}");
            let msg = answer["error"]["message"].as_str().unwrap();
            assert!(msg.contains(why), "{body}: {msg}");
            assert!(msg.starts_with("mcp-guard: "), "{msg}");
        }
        let no_name = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}});
        let Verdict::Refuse { status, answer, .. } = check_body(no_name.to_string().as_bytes(), &r)
        else {
            panic!()
        };
        assert_eq!((status, answer["id"].clone()), (200, json!(1)));
        assert_eq!(answer["error"]["code"], INVALID_PARAMS);
    }

    #[test]
    fn a_refused_message_without_id_is_a_403() {
        let r = rules(json!({"deny_tools": ["x"]}));
        let m = json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "x"}});
        let Verdict::Refuse { status, .. } = check_body(m.to_string().as_bytes(), &r) else {
            panic!()
        };
        assert_eq!(status, 403);
    }

    #[test]
    fn the_answer_takes_the_format_the_client_accepts() {
        assert_eq!(Format::for_accept(None), Format::Json);
        assert_eq!(
            Format::for_accept(Some("application/json, text/event-stream")),
            Format::Json
        );
        assert_eq!(Format::for_accept(Some("text/event-stream")), Format::Sse);
        assert_eq!(
            Format::for_accept(Some("text/event-stream;q=1")),
            Format::Sse
        );
        let e = error(json!(1), -1, "m", json!({}));
        let sse = String::from_utf8(Format::Sse.body(&e)).unwrap();
        assert!(sse.starts_with("event: message\ndata: {"), "{sse}");
        assert!(sse.ends_with("}\n\n"));
        let back: Value = serde_json::from_str(&sse["event: message\ndata: ".len()..]).unwrap();
        assert_eq!(back, e);
    }
}
