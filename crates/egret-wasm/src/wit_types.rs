//! The guest's action types as plain Rust, for builds without the `runtime` feature (the fuzz
//! workspace), where wasmtime's `bindgen!` is not available. They mirror
//! `handlers-wasm/wit/handler.wit` field for field, as bindgen names them; `action.rs` is
//! compiled against both, so a field renamed in the WIT and not here fails that build.

/// `variant header-value`.
#[derive(Clone, Debug)]
pub enum HeaderValue {
    /// `literal(list<u8>)`.
    Literal(Vec<u8>),
    /// `secret(string)`.
    Secret(String),
    /// `secret-template(tuple<string, string>)`.
    SecretTemplate((String, String)),
}

/// `record header-op`.
#[derive(Clone, Debug)]
pub struct HeaderOp {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: HeaderValue,
}

/// `record forward-spec`.
#[derive(Clone, Debug)]
pub struct ForwardSpec {
    /// Headers to set.
    pub set_headers: Vec<HeaderOp>,
    /// Headers to remove.
    pub remove_headers: Vec<String>,
    /// A path rewrite.
    pub path_with_query: Option<String>,
}

/// `record response-spec`.
#[derive(Clone, Debug)]
pub struct ResponseSpec {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Response body.
    pub body: Vec<u8>,
}

/// `variant action`.
#[derive(Clone, Debug)]
pub enum Action {
    /// Forward the request, edited.
    Forward(ForwardSpec),
    /// Answer locally.
    Respond(ResponseSpec),
}
