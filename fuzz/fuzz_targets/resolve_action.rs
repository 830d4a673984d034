//! What a handler (untrusted guest code) returns is validated by `resolve_action` (its request
//! decision) and `resolve_response_action` (its response phase): whatever it returns, neither
//! may panic; an accepted decision must never carry a forbidden header, a CR/LF/NUL in a value,
//! a path that is not origin-form, or a body the binding did not opt into; every secret filled
//! in must be listed for the echo guard.
#![no_main]
use arbitrary::Arbitrary;
use egret_wasm::{
    resolve_action, resolve_response_action, BasicCredentials, Encoding, ForwardSpec, GuestAction,
    GuestHeaderValue, GuestResponseAction, HeaderOp, ResolvedAction, ResolvedResponseAction,
    ResponseEdits, ResponseSpec, SecretRef, ValuePart,
};
use egret_wasm::{Grants, SecretStore};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Part {
    Literal(Vec<u8>),
    Secret(String, u8),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Literal(Vec<u8>),
    Secret(String),
    Template(String, String),
    Parts(Vec<Part>),
    Basic(Vec<Part>, Vec<Part>),
}

#[derive(Arbitrary, Debug)]
enum Input {
    Forward {
        set: Vec<(String, Value)>,
        remove: Vec<String>,
        path: Option<String>,
        body: Option<Vec<Part>>,
        buffered: bool,
    },
    Respond {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
    Pass {
        set: Vec<(String, Vec<u8>)>,
        remove: Vec<String>,
        body: Option<Vec<u8>>,
        buffered: bool,
    },
}

const NAMES: [&str; 7] = [
    "host",
    "connection",
    "transfer-encoding",
    "content-length",
    "te",
    "upgrade",
    "keep-alive",
];

const ENCODINGS: [Encoding; 6] = [
    Encoding::Raw,
    Encoding::Base64,
    Encoding::Base64url,
    Encoding::Percent,
    Encoding::JsonString,
    Encoding::Hex,
];

fn parts(p: Vec<Part>) -> Vec<ValuePart> {
    p.into_iter()
        .map(|p| match p {
            Part::Literal(b) => ValuePart::Literal(b),
            Part::Secret(name, e) => ValuePart::Secret(SecretRef {
                name,
                encoding: ENCODINGS[usize::from(e) % ENCODINGS.len()],
            }),
        })
        .collect()
}

fuzz_target!(|input: Input| {
    let secrets = SecretStore::new();
    secrets.set("TOKEN", "s3cr3t\r\nx-evil: 1");
    secrets.set("OK", "fine-and-long-enough");
    secrets.set("BIN", vec![0xff, 0x00, 0x80]);
    let grants = Grants::use_only(["TOKEN", "OK", "BIN"]);
    let (action, buffered) = match input {
        Input::Pass {
            set,
            remove,
            body,
            buffered,
        } => {
            let a = GuestResponseAction::Pass(ResponseEdits {
                set_headers: set,
                remove_headers: remove,
                body,
            });
            if let Ok(r) = resolve_response_action("fuzz", a, buffered) {
                check_response(&r, buffered);
            }
            return;
        }
        Input::Forward {
            set,
            remove,
            path,
            body,
            buffered,
        } => (
            GuestAction::Forward(ForwardSpec {
                set_headers: set
                    .into_iter()
                    .map(|(name, v)| HeaderOp {
                        name,
                        value: match v {
                            Value::Literal(b) => GuestHeaderValue::Literal(b),
                            Value::Secret(s) => GuestHeaderValue::Secret(s),
                            Value::Template(t, s) => GuestHeaderValue::SecretTemplate((t, s)),
                            Value::Parts(p) => GuestHeaderValue::Parts(parts(p)),
                            Value::Basic(u, p) => GuestHeaderValue::BasicAuth(BasicCredentials {
                                user: parts(u),
                                password: parts(p),
                            }),
                        },
                    })
                    .collect(),
                remove_headers: remove,
                path_with_query: path,
                body: body.map(parts),
            }),
            buffered,
        ),
        Input::Respond {
            status,
            headers,
            body,
        } => (
            GuestAction::Respond(ResponseSpec {
                status,
                headers,
                body,
            }),
            false,
        ),
    };
    if let Ok(resolved) = resolve_action("fuzz", action, &grants, &secrets, buffered) {
        check(&resolved, buffered);
    }
});

fn check(r: &ResolvedAction, buffered: bool) {
    match r {
        ResolvedAction::Forward {
            set,
            remove,
            path_and_query,
            injected_secret_headers,
            body,
            filled,
        } => {
            for name in injected_secret_headers {
                assert!(
                    set.iter().any(|(n, v)| n == name && v.is_sensitive()),
                    "secret-carrying {name} not set as a sensitive value"
                );
                assert!(!filled.is_empty(), "a secret was filled but not listed");
            }
            for (name, value) in set.iter() {
                assert!(
                    !NAMES.contains(&name.as_str()),
                    "forbidden header {name} accepted"
                );
                assert!(!name.as_str().starts_with("proxy-"), "{name} accepted");
                assert!(
                    !value
                        .as_bytes()
                        .iter()
                        .any(|b| matches!(b, b'\r' | b'\n' | 0)),
                    "CR/LF/NUL in {name}"
                );
            }
            for name in remove {
                assert!(
                    !NAMES.contains(&name.as_str()),
                    "removal of {name} accepted"
                );
            }
            if let Some(p) = path_and_query {
                let p = p.as_str();
                assert!(
                    p.starts_with('/') && !p.starts_with("//"),
                    "path {p:?} accepted"
                );
            }
            assert!(buffered || body.is_none(), "a body the binding did not buffer");
        }
        ResolvedAction::Respond { .. } => {}
    }
}

fn check_response(r: &ResolvedResponseAction, buffered: bool) {
    if let ResolvedResponseAction::Pass { set, remove, body } = r {
        for (name, value) in set {
            assert!(
                !NAMES[1..].contains(&name.as_str()),
                "framing header {name} accepted"
            );
            assert!(
                !value
                    .as_bytes()
                    .iter()
                    .any(|b| matches!(b, b'\r' | b'\n' | 0)),
                "CR/LF/NUL in {name}"
            );
        }
        for name in remove {
            assert!(!NAMES[1..].contains(&name.as_str()), "removal of {name}");
        }
        assert!(buffered || body.is_none(), "a body the binding did not buffer");
    }
}
