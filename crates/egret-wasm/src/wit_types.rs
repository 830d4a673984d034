//! What a guest returns, as plain Rust: the host's one model of the actions of every WIT
//! version it loads (`egret:handler@0.1.0` and `@0.2.0`; the generated types of each are
//! converted into these in `convert.rs`). [`crate::resolve_action`] validates these, and the
//! fuzz workspace builds them without wasmtime. Field names follow the WIT of 0.2.0.

/// How a secret's value is written where it is filled in (`enum encoding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The value's bytes as they are.
    Raw,
    /// Standard base64 with padding.
    Base64,
    /// URL-safe base64 without padding.
    Base64url,
    /// Percent-encoded (RFC 3986 unreserved characters kept).
    Percent,
    /// The inside of a JSON string.
    JsonString,
    /// Lower-case hex.
    Hex,
}

/// `record secret-ref`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// Secret name.
    pub name: String,
    /// How it is written.
    pub encoding: Encoding,
}

/// `variant value-part`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValuePart {
    /// Bytes as they are.
    Literal(Vec<u8>),
    /// A secret's value, encoded.
    Secret(SecretRef),
}

/// `record basic-credentials`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicCredentials {
    /// User part.
    pub user: Vec<ValuePart>,
    /// Password part.
    pub password: Vec<ValuePart>,
}

/// `variant header-value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    /// `literal(list<u8>)`.
    Literal(Vec<u8>),
    /// `secret(string)`.
    Secret(String),
    /// `secret-template(tuple<string, string>)`.
    SecretTemplate((String, String)),
    /// `parts(list<value-part>)` (0.2.0).
    Parts(Vec<ValuePart>),
    /// `basic-auth(basic-credentials)` (0.2.0).
    BasicAuth(BasicCredentials),
}

/// `record header-op`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderOp {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: HeaderValue,
}

/// `record forward-spec`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardSpec {
    /// Headers to set.
    pub set_headers: Vec<HeaderOp>,
    /// Headers to remove.
    pub remove_headers: Vec<String>,
    /// A path rewrite.
    pub path_with_query: Option<String>,
    /// A replacement body (0.2.0, buffered bindings only).
    pub body: Option<Vec<ValuePart>>,
}

/// `record response-spec`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseSpec {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Response body.
    pub body: Vec<u8>,
}

/// `variant action`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Forward the request, edited.
    Forward(ForwardSpec),
    /// Answer locally.
    Respond(ResponseSpec),
}

/// `record response-edits` (0.2.0).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ResponseEdits {
    /// Headers to set on the response.
    pub set_headers: Vec<(String, Vec<u8>)>,
    /// Headers to remove from the response.
    pub remove_headers: Vec<String>,
    /// A replacement body (buffered responses only).
    pub body: Option<Vec<u8>>,
}

/// `variant response-action` (0.2.0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseAction {
    /// Pass the response on, edited.
    Pass(ResponseEdits),
    /// Replace it.
    Replace(ResponseSpec),
}
