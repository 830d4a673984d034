//! What a handler (untrusted guest code) returns is validated by `resolve_action`: whatever it
//! returns, the result must never panic, and an accepted action must never carry a forbidden
//! header, a CR/LF/NUL in a value, or a path that is not origin-form.
#![no_main]
use arbitrary::Arbitrary;
use egret_wasm::{
    resolve_action, ForwardSpec, GuestAction, GuestHeaderValue, HeaderOp, ResolvedAction,
    ResponseSpec,
};
use egret_wasm::{Grants, SecretStore};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Value {
    Literal(Vec<u8>),
    Secret(String),
    Template(String, String),
}

#[derive(Arbitrary, Debug)]
enum Input {
    Forward {
        set: Vec<(String, Value)>,
        remove: Vec<String>,
        path: Option<String>,
    },
    Respond {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
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

fuzz_target!(|input: Input| {
    let action = match input {
        Input::Forward { set, remove, path } => GuestAction::Forward(ForwardSpec {
            set_headers: set
                .into_iter()
                .map(|(name, v)| HeaderOp {
                    name,
                    value: match v {
                        Value::Literal(b) => GuestHeaderValue::Literal(b),
                        Value::Secret(s) => GuestHeaderValue::Secret(s),
                        Value::Template(t, s) => GuestHeaderValue::SecretTemplate((t, s)),
                    },
                })
                .collect(),
            remove_headers: remove,
            path_with_query: path,
        }),
        Input::Respond {
            status,
            headers,
            body,
        } => GuestAction::Respond(ResponseSpec {
            status,
            headers,
            body,
        }),
    };
    let secrets = SecretStore::new();
    secrets.set("TOKEN", "s3cr3t\r\nx-evil: 1");
    secrets.set("OK", "fine");
    let grants = Grants::use_only(["TOKEN", "OK"]);
    if let Ok(resolved) = resolve_action("fuzz", action, &grants, &secrets) {
        check(&resolved);
    }
});

fn check(r: &ResolvedAction) {
    match r {
        ResolvedAction::Forward {
            set,
            remove,
            path_and_query,
            injected_secret_headers,
        } => {
            for name in injected_secret_headers {
                assert!(
                    set.iter().any(|(n, v)| n == name && v.is_sensitive()),
                    "secret-carrying {name} not set as a sensitive value"
                );
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
        }
        ResolvedAction::Respond { .. } => {}
    }
}
