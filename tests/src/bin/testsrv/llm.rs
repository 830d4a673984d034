//! An OpenAI-style chat completions API, for handlers that police model calls (`llm-guard`).
//!
//! `POST /v1/chat/completions`, JSON `{"model", "messages": [{"role", "content"}…],
//! "max_tokens"?, "max_completion_tokens"?, "stream"?, "stream_options": {"include_usage"}?}`.
//! The answer is deterministic, so that a test can predict every number:
//!
//! * the assistant's content is the text of the last `user` message, unchanged (what arrived
//!   upstream, after any handler);
//! * `prompt_tokens` = the number of whitespace-separated words in the text of every message
//!   (a string `content`, or the `text` of each part of an array `content`);
//! * `completion_tokens` = min(limit, 16), the limit being `max_completion_tokens`, else
//!   `max_tokens`, else 16; `finish_reason` is `length` when the limit is below 16, else `stop`;
//! * `total_tokens` = prompt + completion.
//!
//! Without `stream`: one `chat.completion` JSON object with `usage`. With `stream: true`:
//! `text/event-stream`, each event its own write, `--sse-delay-ms` apart: a chunk with the role,
//! the content in up to [`PIECES`] chunks (their deltas concatenate to the content), a chunk with
//! the finish reason, a last chunk with `"choices": []` and the `usage` (sent whether or not
//! `stream_options.include_usage` asks; when it does, the other chunks carry `"usage": null` as
//! OpenAI's do), then `data: [DONE]`.
//!
//! A malformed request gets `400` with an OpenAI error object
//! (`{"error": {"message", "type": "invalid_request_error", "param", "code"}}`); with
//! `--llm-api-key`, a request without `Authorization: Bearer KEY` gets `401 invalid_api_key`;
//! another method than POST gets `405`. Each is logged `LLM-REJECTED status=S reason=R`, R the
//! parameter at fault (`model`, `messages`, `max_tokens`, `stream`, `body`), `invalid_api_key`
//! or `method`.
use super::{frames_body, header_str, json, log_value, random_id, read_body, Body, State};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The most content chunks a streamed answer has.
pub(crate) const PIECES: usize = 4;
/// The most completion tokens an answer counts.
const MAX_COMPLETION: u64 = 16;

/// The chat API's settings.
pub(crate) struct Llm {
    sse_delay: Duration,
    api_key: Option<String>,
}

impl Llm {
    pub(crate) fn new(sse_delay_ms: u64, api_key: Option<String>) -> Llm {
        Llm {
            sse_delay: Duration::from_millis(sse_delay_ms),
            api_key,
        }
    }
}

/// A request that passed validation.
#[derive(Debug, PartialEq)]
struct Chat {
    model: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    max_tokens: Option<u64>,
    finish_reason: &'static str,
    content: String,
    stream: bool,
    include_usage: bool,
}

/// A refused request: (status, error code, the parameter at fault, message).
type Refusal = (
    StatusCode,
    Option<&'static str>,
    Option<&'static str>,
    String,
);

fn invalid(param: &'static str, message: &str) -> Refusal {
    (StatusCode::BAD_REQUEST, None, Some(param), message.into())
}

/// The text of a message's `content`: a string, or the `text` parts of an array.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            let texts = parts.iter().filter_map(|p| p.get("text")?.as_str());
            texts.collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

fn parse(body: &[u8]) -> Result<Chat, Refusal> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("body", &format!("the body is not valid JSON: {e}")))?;
    let model = v.get("model").and_then(Value::as_str).unwrap_or("");
    if model.is_empty() {
        return Err(invalid("model", "you must provide a model parameter"));
    }
    let messages = match v.get("messages").and_then(Value::as_array) {
        Some(m) if !m.is_empty() => m,
        _ => return Err(invalid("messages", "messages must be a non-empty array")),
    };
    let mut prompt_tokens = 0u64;
    let mut last_user = String::new();
    for m in messages {
        let Some(role) = m.get("role").and_then(Value::as_str) else {
            return Err(invalid("messages", "every message needs a role"));
        };
        let text = m.get("content").map(content_text).unwrap_or_default();
        prompt_tokens += text.split_whitespace().count() as u64;
        if role == "user" {
            last_user = text;
        }
    }
    let limit_field = ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .find(|f| v.get(*f).is_some_and(|x| !x.is_null()));
    let max_tokens = match limit_field {
        Some(f) => match v[f].as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => return Err(invalid("max_tokens", "max_tokens must be an integer >= 1")),
        },
        None => None,
    };
    let stream = match v.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream", "stream must be a boolean")),
    };
    let include_usage = v
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let limit = max_tokens.unwrap_or(MAX_COMPLETION);
    Ok(Chat {
        model: model.to_string(),
        prompt_tokens,
        completion_tokens: limit.min(MAX_COMPLETION),
        max_tokens,
        finish_reason: if limit < MAX_COMPLETION {
            "length"
        } else {
            "stop"
        },
        content: last_user,
        stream,
        include_usage,
    })
}

/// `content` cut at word starts into at most `n` pieces that concatenate back to it.
fn pieces(content: &str, n: usize) -> Vec<String> {
    let mut starts: Vec<usize> = content
        .char_indices()
        .zip(content.chars().skip(1))
        .filter(|((_, c), next)| c.is_whitespace() && !next.is_whitespace())
        .map(|((i, c), _)| i + c.len_utf8())
        .collect();
    starts.insert(0, 0);
    let per = starts.len().div_ceil(n.max(1));
    let cuts: Vec<usize> = starts.iter().step_by(per).copied().collect();
    let ends = cuts.iter().skip(1).copied().chain([content.len()]);
    let all = cuts
        .iter()
        .zip(ends)
        .map(|(a, b)| content[*a..b].to_string());
    all.filter(|p| !p.is_empty()).collect()
}

/// A chunk's `choices`: one choice with this delta and finish reason.
fn delta(delta: Value, finish: Option<&str>) -> Value {
    json!([{ "index": 0, "delta": delta, "finish_reason": finish }])
}

pub(crate) async fn route(
    req: Request<Incoming>,
    st: &Arc<State>,
) -> Result<Response<Body>, std::io::Error> {
    let llm = &st.llm;
    let authorized = llm.api_key.as_ref().is_none_or(|key| {
        header_str(&req, "authorization").is_some_and(|a| a == format!("Bearer {key}"))
    });
    let checked = if req.method() != http::Method::POST {
        let msg = "only POST is supported here".to_string();
        Err((StatusCode::METHOD_NOT_ALLOWED, None, None, msg))
    } else if !authorized {
        let msg = "Incorrect API key provided.".to_string();
        Err((StatusCode::UNAUTHORIZED, Some("invalid_api_key"), None, msg))
    } else {
        parse(&read_body(req.into_body()).await?)
    };
    let chat = match checked {
        Ok(chat) => chat,
        Err((status, code, param, message)) => {
            st.log_line(&format!(
                "LLM-REJECTED status={} reason={}",
                status.as_u16(),
                param.or(code).unwrap_or("method")
            ));
            let error = json!({
                "error": { "message": message, "type": "invalid_request_error",
                           "param": param, "code": code },
            });
            return Ok(json(status, &error));
        }
    };
    st.log_line(&format!(
        "LLM model={} prompt_tokens={} completion_tokens={} stream={} max_tokens={} \
         include_usage={}",
        log_value(&chat.model),
        chat.prompt_tokens,
        chat.completion_tokens,
        chat.stream,
        chat.max_tokens.map_or("none".into(), |n| n.to_string()),
        chat.include_usage,
    ));
    let id = format!("chatcmpl-{}", random_id(18));
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let usage = json!({
        "prompt_tokens": chat.prompt_tokens,
        "completion_tokens": chat.completion_tokens,
        "total_tokens": chat.prompt_tokens + chat.completion_tokens,
    });
    if !chat.stream {
        let body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": chat.model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": chat.content },
                "finish_reason": chat.finish_reason,
            }],
            "usage": usage,
        });
        return Ok(json(StatusCode::OK, &body));
    }
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created,
            "model": chat.model, "choices": choices,
        });
        if let Some(u) = usage {
            c["usage"] = u.clone();
        } else if chat.include_usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(
        delta(json!({"role": "assistant", "content": ""}), None),
        None,
    )];
    for p in pieces(&chat.content, PIECES) {
        events.push(chunk(delta(json!({ "content": p }), None), None));
    }
    events.push(chunk(delta(json!({}), Some(chat.finish_reason)), None));
    events.push(chunk(json!([]), Some(&usage)));
    events.push("data: [DONE]\n\n".into());
    let delay = llm.sse_delay;
    let s = futures_util::stream::unfold(
        (events.into_iter(), true),
        move |(mut it, first)| async move {
            let ev = it.next()?;
            if !first {
                tokio::time::sleep(delay).await;
            }
            Some((Frame::data(Bytes::from(ev)), (it, false)))
        },
    );
    let mut r = Response::new(frames_body(s));
    let h = r.headers_mut();
    h.insert("content-type", "text/event-stream".parse().unwrap());
    h.insert("cache-control", "no-cache".parse().unwrap());
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_follows_the_documented_rule() {
        let body = br#"{"model": "gpt-x", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "one two"},
                                         {"type": "text", "text": "three"}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "  say   hello  "}], "max_tokens": 5, "stream": true}"#;
        let c = parse(body).unwrap();
        assert_eq!(c.prompt_tokens, 2 + 3 + 1 + 2);
        assert_eq!((c.completion_tokens, c.finish_reason), (5, "length"));
        assert_eq!(c.content, "  say   hello  ");
        assert!(c.stream && !c.include_usage);
        let c = parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],
                 "max_completion_tokens":99,"max_tokens":1}"#,
        )
        .unwrap();
        assert_eq!(
            (c.completion_tokens, c.finish_reason, c.max_tokens),
            (16, "stop", Some(99))
        );
        let c = parse(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!((c.completion_tokens, c.max_tokens), (16, None));
        for bad in [
            &br#"{"messages":[{"role":"user","content":"hi"}]}"#[..],
            br#"{"model":"m","messages":[]}"#,
            br#"{"model":"m","messages":[{"role":"user"}],"max_tokens":0}"#,
            br#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
            b"not json",
        ] {
            assert_eq!(parse(bad).unwrap_err().0, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn pieces_concatenate_back() {
        for s in [
            "",
            "one",
            "a b c d e f g h i",
            "  lead and trail  ",
            "ünï cödé wörds",
        ] {
            let p = pieces(s, PIECES);
            assert_eq!(p.concat(), s);
            assert!(p.len() <= PIECES);
        }
        assert_eq!(pieces("a b c d e f g h", 4).len(), 4);
    }
}
