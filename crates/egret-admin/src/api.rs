//! Request and response bodies of the admin API, shared by the server and the client so that
//! the two cannot drift. Request types refuse unknown fields: a typo in a control-plane script
//! should fail loudly rather than be ignored.

use egret_policy::RouteConfig;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::control::SecretValue;

/// Name of the precondition header every mutating request accepts.
pub const IF_GENERATION: &str = "if-generation";
/// Response header carrying the generation on `GET /v1/policy?format=toml`.
pub const GENERATION_HEADER: &str = "x-egret-generation";
/// Content type of `GET /metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Stable error codes. Scripts may match on these; the messages are for humans and may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed in a way no other code describes (400).
    BadRequest,
    /// The body is not the JSON this endpoint expects; `line`/`column` say where (400).
    InvalidJson,
    /// The change parsed but would make the policy invalid; `problems` lists each (422), or a
    /// TOML policy did not parse (400, with `line`/`column`).
    InvalidPolicy,
    /// A name in the path is not `[A-Za-z0-9_.-]{1,64}` or is `.`/`..` (400).
    InvalidName,
    /// The `if-generation` precondition failed; `expected`/`current` say both numbers (409).
    Conflict,
    /// No such endpoint, handler, secret, module or route (404).
    NotFound,
    /// The endpoint exists but not with this method; see the `allow` header (405).
    MethodNotAllowed,
    /// The body is larger than the limit (413).
    PayloadTooLarge,
    /// The peer's uid may not use this socket (403).
    Forbidden,
    /// Something broke on the server side (500).
    Internal,
    /// A code this client does not know (a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidPolicy => "invalid_policy",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The HTTP status the server answers this code with (`InvalidPolicy` may also be sent
    /// with 400 for a TOML syntax error).
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::InvalidJson
            | ErrorCode::InvalidName
            | ErrorCode::Unknown => StatusCode::BAD_REQUEST,
            ErrorCode::InvalidPolicy => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every error response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ApiError,
}

/// The body of an error. Optional fields appear only when they apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// What went wrong and what to do about it.
    pub message: String,
    /// One entry per problem (invalid changes list every problem at once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// 1-based line of a JSON/TOML parse error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column of a JSON/TOML parse error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// A suggestion (e.g. the closest valid key), when one can be made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// `conflict`: the generation the request required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    /// `conflict`: the generation in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    /// `not_found` for an unknown path: the endpoints that exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
}

impl ApiError {
    /// An error with only a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            problems: Vec::new(),
            line: None,
            column: None,
            hint: None,
            expected: None,
            current: None,
            endpoints: Vec::new(),
        }
    }
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"` when the server answers.
    pub status: String,
}

/// `POST /v1/allowed-hosts`, `POST /v1/denied-hosts`: `{"add": [...], "remove": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostListChange {
    /// Patterns to add.
    #[serde(default)]
    pub add: Vec<String>,
    /// Patterns to remove (applied before `add`).
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `PUT /v1/outbound-by-host`: `{"routes": [{"hosts": [...], "handler": "x", "params": {}}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundByHostRequest {
    /// Routes to add; each replaces a runtime route with the same host pattern.
    pub routes: Vec<RouteConfig>,
}

/// `DELETE /v1/outbound-by-host`: `{"hosts": ["a.test"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveHostsRequest {
    /// Host patterns whose runtime routes are removed.
    pub hosts: Vec<String>,
}

/// `PUT /v1/internet`: `{"enabled": true}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternetRequest {
    /// The new value of the `internet` flag.
    pub enabled: bool,
}

/// `PUT /v1/secrets/{name}`: `{"value": "..."}`. `Debug` is redacted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRequest {
    /// The value.
    pub value: SecretValue,
}

impl Serialize for SecretRequest {
    // Only the client serialises this, to send it; written by hand so that `SecretValue`
    // itself never gains a `Serialize` impl that could leak it elsewhere.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("SecretRequest", 1)?;
        st.serialize_field("value", self.value.expose())?;
        st.end()
    }
}

/// Answer to `PUT /v1/secrets/{name}`: the name and generation, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSet {
    /// The secret's name.
    pub name: String,
    /// Generation now in force.
    pub generation: u64,
    /// Warnings from the change.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// `GET /v1/secrets`: names only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretList {
    /// Secret names, sorted.
    pub secrets: Vec<String>,
}

/// `GET /v1/modules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleList {
    /// Uploaded modules.
    pub modules: Vec<crate::ModuleInfo>,
}

/// Filter for `GET /v1/audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only events of this sandbox.
    pub sandbox: Option<String>,
    /// Only denials (`decision` = `deny`).
    pub deny_only: bool,
}

impl AuditFilter {
    /// The query string (without `?`), empty when nothing is filtered.
    pub fn to_query(&self) -> String {
        let mut q = Vec::new();
        if let Some(s) = &self.sandbox {
            q.push(format!("sandbox={}", percent_encode(s)));
        }
        if self.deny_only {
            q.push("deny_only=true".to_owned());
        }
        q.join("&")
    }

    /// Whether an audit event (one JSON object) passes. Fields are looked up at the top level
    /// and under `fields` (tracing-subscriber's JSON layout). With no filter everything passes,
    /// including lines that are not JSON.
    pub fn matches(&self, line: &str) -> bool {
        if self.sandbox.is_none() && !self.deny_only {
            return true;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return false;
        };
        if let Some(want) = &self.sandbox {
            if event_str(&v, "sandbox") != Some(want.as_str()) {
                return false;
            }
        }
        !self.deny_only || event_str(&v, "decision") == Some("deny")
    }
}

/// A string field of an audit event, at the top level or under `fields`.
pub fn event_str<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    event_field(v, key).and_then(|x| x.as_str())
}

/// A field of an audit event, at the top level or under `fields`.
pub fn event_field<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    v.get(key)
        .or_else(|| v.get("fields").and_then(|f| f.get(key)))
}

/// Percent-encodes everything outside the URL "unreserved" set.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes and `+` (as space); `None` if the result is not UTF-8 or an escape
/// is malformed.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                // `from_str_radix` alone would take a sign: "%+1" is malformed, not 0x01.
                let hex = s.get(i + 1..i + 3)?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `name` may appear as a path segment naming a handler, module or secret:
/// `[A-Za-z0-9_.-]{1,64}`, and not `.` or `..`.
pub fn is_valid_name(name: &str) -> bool {
    egret_policy::is_valid_name(name) && name != "." && name != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "inject-header", "v1.2_x", &"a".repeat(64)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "%2e", &"a".repeat(65), "é"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn codes_round_trip_and_unknown_is_tolerated() {
        let e: ErrorCode = serde_json::from_str("\"invalid_json\"").unwrap();
        assert_eq!(e, ErrorCode::InvalidJson);
        assert_eq!(serde_json::to_string(&e).unwrap(), "\"invalid_json\"");
        let e: ErrorCode = serde_json::from_str("\"from_the_future\"").unwrap();
        assert_eq!(e, ErrorCode::Unknown);
    }

    #[test]
    fn percent_round_trip() {
        let s = "agent 47/ü&x=y";
        assert_eq!(percent_decode(&percent_encode(s)).unwrap(), s);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }

    #[test]
    fn audit_filter() {
        let f = AuditFilter {
            sandbox: Some("a".into()),
            deny_only: true,
        };
        assert!(f.matches(r#"{"sandbox":"a","decision":"deny"}"#));
        assert!(f.matches(r#"{"fields":{"sandbox":"a","decision":"deny"}}"#));
        assert!(!f.matches(r#"{"sandbox":"b","decision":"deny"}"#));
        assert!(!f.matches(r#"{"sandbox":"a","decision":"forward"}"#));
        assert!(!f.matches("not json"));
        assert!(AuditFilter::default().matches("not json"));
        assert_eq!(f.to_query(), "sandbox=a&deny_only=true");
    }

    #[test]
    fn secret_request_debug_is_redacted() {
        let r: SecretRequest = serde_json::from_str(r#"{"value":"hunter2"}"#).unwrap();
        assert!(!format!("{r:?}").contains("hunter2"));
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"value":"hunter2"}"#);
    }
}
