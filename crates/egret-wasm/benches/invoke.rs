//! Handler invocation, the per-request cost of a route with a handler: a fresh instance from
//! the pre-instantiated component, the guest call, and (for `handle`) resolving the action
//! against the grants and secrets. Uses `handlers-wasm/dist/inject-header.wasm`;
//! `scripts/build-handlers.sh` (run by `scripts/bench.sh --micro`) builds it.
//! `cargo bench -p egret-wasm`.
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use egret_wasm::{
    Grants, HandlerHost, HostConfig, Invocation, KvStore, Limits, LoadedHandler, RequestHead,
    SecretStore,
};

const PARAMS: &str = r#"{"header":"authorization","secret":"gh","template":"Bearer {}"}"#;

struct Fixture {
    rt: tokio::runtime::Runtime,
    host: HandlerHost,
    handler: Arc<LoadedHandler>,
    secrets: SecretStore,
    kv: KvStore,
    grants: Grants,
    request: RequestHead,
}

impl Fixture {
    fn invocation(&self) -> Invocation<'_> {
        Invocation {
            handler_name: "inject-header",
            sandbox_id: "bench",
            params_json: PARAMS,
            request: &self.request,
            grants: &self.grants,
            secrets: &self.secrets,
            kv: &self.kv,
            limits: Limits {
                timeout: Duration::from_secs(2),
                memory_bytes: 16 << 20,
            },
        }
    }
}

fn module_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../handlers-wasm/dist/inject-header.wasm")
}

fn fixture() -> Fixture {
    let bytes = std::fs::read(module_path()).expect("reading inject-header.wasm");
    // One worker thread, like egret's runtime on a 2-core sandbox host; the guest runs on it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let host = HandlerHost::new(HostConfig::default()).expect("handler host");
    let handler = rt
        .block_on(host.load("inject-header", &bytes))
        .expect("loading inject-header.wasm");
    let secrets = SecretStore::new();
    secrets.set("gh", "bench-secret-value");
    let mut headers = vec![("user-agent".to_string(), b"bench/1.0".to_vec())];
    for i in 0..8 {
        headers.push((format!("x-bench-{i}"), vec![b'v'; 32]));
    }
    Fixture {
        rt,
        host,
        handler,
        secrets,
        kv: KvStore::new(),
        grants: Grants::use_only(["gh"]),
        request: RequestHead {
            method: "GET".into(),
            scheme: "https".into(),
            authority: "api.github.test".into(),
            path_with_query: "/repos/o/r/issues?per_page=100".into(),
            headers,
        },
    }
}

fn main() {
    // Skip (with the reason printed) rather than fail when the guests are not built.
    let path = module_path();
    if !path.is_file() {
        eprintln!(
            "skipping the egret-wasm benchmarks: {} is missing; build the handlers first with \
             scripts/build-handlers.sh",
            path.display()
        );
        return;
    }
    divan::main();
}

/// Guest only: instantiate + call, returning the guest's action unresolved.
#[divan::bench]
fn invoke_inject_header(bencher: divan::Bencher) {
    let f = fixture();
    bencher.bench_local(|| {
        f.rt.block_on(f.host.invoke(&f.handler, black_box(f.invocation())))
            .unwrap()
    });
}

/// What the proxy pays per request: invoke + resolve the action (secret lookup, header build).
#[divan::bench]
fn handle_inject_header(bencher: divan::Bencher) {
    let f = fixture();
    bencher.bench_local(|| {
        f.rt.block_on(f.host.handle(&f.handler, black_box(f.invocation())))
            .unwrap()
    });
}

/// `llm-guard` on a 4 KiB JSON chat request (the body handed to the guest, parsed, the model
/// checked, scanned for a watched secret), and `inject-header` on the same request through the
/// same session API: what reading a body adds in the guest.
#[divan::bench(args = ["inject-header", "llm-guard"])]
fn session_4k_json(bencher: divan::Bencher, module: &str) {
    let f = fixture();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../handlers-wasm/dist");
    let bytes = std::fs::read(dir.join(format!("{module}.wasm"))).expect("reading the module");
    let handler = f.rt.block_on(f.host.load(module, &bytes)).expect("loading");
    let params = if module == "llm-guard" {
        r#"{"models":["m"],"max_tokens_cap":1024,"watch_secrets":["db"],"api_key_secret":"gh"}"#
    } else {
        PARAMS
    };
    f.secrets.set("db", "bench-db-password");
    let grants = Grants::new(["gh", "db"], ["db"]);
    let mut words = String::new();
    while words.len() < 4000 {
        words.push_str("lorem ipsum dolor sit amet ");
    }
    let body = bytes::Bytes::from(
        format!(
            r#"{{"model":"m","max_tokens":16,"messages":[{{"role":"user","content":"{words}"}}]}}"#
        )
        .into_bytes(),
    );
    let mut request = f.request.clone();
    request.method = "POST".into();
    request.path_with_query = "/v1/chat/completions".into();
    bencher.bench_local(|| {
        f.rt.block_on(async {
            let mut s = f
                .host
                .session(
                    &handler,
                    egret_wasm::SessionSpec {
                        handler_name: module,
                        sandbox_id: "bench",
                        params_json: params,
                        grants: &grants,
                        secrets: &f.secrets,
                        kv: &f.kv,
                        limits: Limits {
                            timeout: Duration::from_secs(2),
                            memory_bytes: 16 << 20,
                        },
                        services: Default::default(),
                        reuse: false,
                    },
                )
                .await
                .unwrap();
            s.handle(request.clone(), Some(black_box(body.clone())))
                .await
                .unwrap()
        })
    });
}
