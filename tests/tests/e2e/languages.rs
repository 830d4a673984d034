//! Handlers written in TypeScript and Python: built from source with `egret handler build`,
//! accepted by `egret handler check`, loaded at runtime with `egret ctl module upload` +
//! `handler set`, and deciding real sandbox requests; failures are a 502 naming the handler.
//!
//! Builds and compiled artifacts are shared through `target/lang-handlers` (see
//! [`lang_handler`]): a toolchain build takes half a minute and wasmtime's first compile of a
//! 12-18 MB component about 20 s.
use egret_e2e::*;
use std::process::Command;
use std::time::Duration;

/// The two languages' builds of one example: (label, source under the repository root).
const GET_ONLY: [(&str, &str); 2] = [
    ("ts", "handlers-wasm/ts/get-only.ts"),
    ("py", "handlers-wasm/py/get_only.py"),
];

fn egret_cmd(args: &[&str]) -> (i32, String, String) {
    code_out_err(&Command::new(bin("egret")).args(args).output().unwrap())
}

/// A sandbox with a plain-HTTP upstream (`web.test`) and egret serving the admin socket,
/// with no handler: they are uploaded at runtime.
struct Env {
    topo: Topology,
    up: Upstream,
    egret: Egret,
    sock: String,
}

fn setup(id: &str, policy_extra: &str, env: &[(&str, &str)]) -> Env {
    let topo = Topology::new(SandboxNet::LoOnly);
    let up = Upstream::start(&topo, "up", None);
    let policy = format!(
        "internet = false\n[resolve]\n\"web.test\" = \"10.200.0.2\"\n\"other.test\" = \"10.200.0.2\"\n\"kv.test\" = \"10.200.0.2\"\n\"api.test\" = \"10.200.0.2\"\n\"blocked.test\" = \"10.200.0.2\"\n{policy_extra}"
    );
    let p = write(&topo, "policy.toml", &policy);
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let cache = lang_artifact_dir();
    let egret = Egret::start_with_env(
        &topo,
        id,
        &[
            "--policy",
            &p,
            "--admin-socket",
            &sock,
            "--handler-cache-dir",
            &cache,
        ],
        env,
    )
    .expect("egret starts");
    Env {
        topo,
        up,
        egret,
        sock,
    }
}

impl Env {
    /// `module upload NAME FILE` then `handler set NAME --module uploaded:NAME ARGS`.
    fn load(&self, name: &str, file: &std::path::Path, args: &[&str]) {
        let (code, out, err) = ctl(
            &self.sock,
            &["module", "upload", name, file.to_str().unwrap()],
        );
        assert_eq!(
            code,
            0,
            "module upload {name}: {out}{err}\n{}",
            self.egret.logs()
        );
        let module = format!("uploaded:{name}");
        let mut a = vec!["handler", "set", name, "--module", &module];
        a.extend_from_slice(args);
        let (code, out, err) = ctl(&self.sock, &a);
        assert_eq!(code, 0, "handler set {name}: {out}{err}");
    }

    fn outbound(&self, name: &str, params: Option<&str>) {
        let mut a = vec!["set-outbound", name];
        if let Some(p) = params {
            a.extend(["--params", p]);
        }
        let (code, out, err) = ctl(&self.sock, &a);
        assert_eq!(code, 0, "set-outbound {name}: {out}{err}");
    }
}

#[test]
fn get_only_in_typescript_and_python_denies_a_post_and_forwards_a_get() {
    // Built from source (once per content: see lang_handler) and checked like any module.
    let modules: Vec<_> = GET_ONLY
        .iter()
        .map(|(lang, src)| (*lang, lang_handler(src)))
        .collect();
    for (lang, m) in &modules {
        let cache = lang_artifact_dir();
        let (code, out, err) = egret_cmd(&[
            "handler",
            "check",
            m.to_str().unwrap(),
            "--handler-cache-dir",
            &cache,
        ]);
        assert_eq!(code, 0, "{lang}: {out}{err}");
        assert!(
            out.contains("world    egret:handler/handler@0.3.0"),
            "{lang}: {out}"
        );
        assert!(
            out.contains(
                "imports  egret:handler/host@0.3.0, egret:handler/streaming@0.3.0, \
                 egret:handler/types@0.3.0"
            ) || *lang == "py",
            "{lang}: the JS component imports more than the handler world: {out}"
        );
    }
    let env = setup("lang-getonly", "", &[]);
    for (lang, m) in &modules {
        let name = format!("get-only-{lang}");
        env.load(&name, m, &[]);
        env.outbound(&name, None);
        let path = format!("/post-from-{lang}");
        let (code, out, err) = env.topo.curl(&[
            "-i",
            "-X",
            "POST",
            "-d",
            "x=1",
            &format!("http://web.test{path}"),
        ]);
        assert_eq!(code, 0, "{lang}: {err}");
        assert!(
            out.starts_with("HTTP/1.1 405"),
            "{lang}: {out}\n{}",
            env.egret.logs()
        );
        assert!(
            out.to_ascii_lowercase().contains("allow: get, head"),
            "{lang}: {out}"
        );
        assert!(out.contains("method POST is not allowed"), "{lang}: {out}");
        assert!(
            !env.up.access_log().contains(&path),
            "{lang}: POST reached upstream"
        );
        // The handler's log line, tagged by egret with the handler.
        assert!(
            env.egret.wait_log(
                &format!("tried POST http://web.test{path}"),
                Duration::from_secs(5)
            ),
            "{lang}: no log line\n{}",
            env.egret.logs()
        );
        let (code, out, err) = env.topo.curl(&[&format!("http://web.test/echo?{lang}")]);
        assert_eq!(code, 0, "{lang}: {err}");
        assert_eq!(
            json(&out)["headers"]["x-egret-handler"],
            "get-only",
            "{lang}"
        );
        let (code, out, _) = env.topo.curl(&["-I", "http://web.test/echo"]);
        assert_eq!(code, 0);
        assert!(out.starts_with("HTTP/1.1 200"), "{lang}: HEAD: {out}");
    }
}

#[test]
fn a_throwing_handler_is_a_502_naming_it_and_the_message_without_the_secret() {
    const KEY: &str = "key-7d1e0b9c4f2a66aa";
    let modules: Vec<_> = [
        ("ts", "tests/lang-handlers/throws.ts"),
        ("py", "tests/lang-handlers/throws.py"),
    ]
    .iter()
    .map(|(lang, src)| (*lang, lang_handler(src)))
    .collect();
    let env = setup(
        "lang-throws",
        "[secrets]\nAPI_KEY = { env = \"API_KEY\" }\n",
        &[("API_KEY", KEY)],
    );
    for (lang, m) in &modules {
        let name = format!("throws-{lang}");
        env.load(&name, m, &["--secret", "API_KEY", "--reveal", "API_KEY"]);
        env.outbound(&name, None);
        let (code, out, err) = env.topo.curl(&["-i", "http://web.test/boom"]);
        assert_eq!(code, 0, "{lang}: {err}");
        assert!(
            out.starts_with("HTTP/1.1 502"),
            "{lang}: {out}\n{}",
            env.egret.logs()
        );
        assert!(
            out.contains(&format!("handler `{name}` failed")),
            "{lang}: not named: {out}"
        );
        assert!(
            out.contains("upstream refused key [redacted] for /boom"),
            "{lang}: message: {out}"
        );
        let (_, out, _) = env.topo.curl(&["-i", "http://web.test/type-error"]);
        assert!(out.starts_with("HTTP/1.1 502"), "{lang}: {out}");
        let want = if *lang == "ts" {
            "TypeError"
        } else {
            "KeyError"
        };
        assert!(out.contains(want), "{lang}: {out}");
        assert!(
            !env.up.access_log().contains("/boom"),
            "{lang}: reached upstream"
        );
    }
    let logs = env.egret.logs();
    assert!(logs.contains("uncaught exception"), "{logs}");
    assert!(!logs.contains(KEY), "the secret is in egret's logs");
}

/// The stream phase in both SDKs, through `egret handler run --response-mode stream`: each
/// server-sent event is passed, replaced or dropped before it would be sent.
#[test]
fn the_stream_phase_in_typescript_and_python_passes_replaces_and_drops_events() {
    let tmp = TempDir::new(&format!("lang-stream-{}", unique_id()));
    let body = tmp.path("events");
    std::fs::write(
        &body,
        "data: one\n\ndata: the password is hunter2\r\n\r\ndata: drop-me\n\n",
    )
    .unwrap();
    for (lang, src) in [
        ("ts", "tests/lang-handlers/redact-stream.ts"),
        ("py", "tests/lang-handlers/redact_stream.py"),
    ] {
        let m = lang_handler(src);
        let (code, out, err) = egret_cmd(&[
            "handler",
            "run",
            m.to_str().unwrap(),
            "--request",
            "GET https://api.test/stream",
            "--response",
            "200",
            "--response-header",
            "content-type: text/event-stream",
            "--response-body-file",
            body.to_str().unwrap(),
            "--response-mode",
            "stream",
        ]);
        assert_eq!(code, 0, "{lang}: {out}{err}");
        for want in [
            "event 0: pass (11 bytes)",
            r#"event 1: replace with 36 bytes: "data: the password is [redacted]\r\n\r\n""#,
            "event 2: drop",
            "response body streamed: 3 pieces, 47 bytes sent",
        ] {
            assert!(out.contains(want), "{lang}: no {want:?} in\n{out}{err}");
        }
    }
}

#[test]
fn bad_sources_get_a_clear_error_from_build() {
    let tmp = TempDir::new(&format!("lang-bad-{}", unique_id()));
    let cases = [
        (
            "syntax.ts",
            "export function handle(req) { return forward( }\n",
            vec!["syntax.ts:1:", "Unexpected"],
        ),
        (
            "syntax.py",
            "def handle(req, ctx)\n    return None\n",
            vec!["syntax.py", "SyntaxError"],
        ),
        (
            "nohandle.ts",
            "export function handler() {}\n",
            vec![
                "nohandle.ts",
                "must export a function `handle(req, ctx)`",
                "exports: handler",
            ],
        ),
        (
            "nohandle.py",
            "def handler(req, ctx):\n    return None\n",
            vec!["nohandle.py", "must define a function `handle(req, ctx)`"],
        ),
        (
            "handler.rs",
            "fn main() {}\n",
            vec!["handler.rs", "unknown handler language", "wasm32-wasip2"],
        ),
    ];
    for (file, text, wants) in cases {
        let src = tmp.path(file);
        std::fs::write(&src, text).unwrap();
        let out = tmp.path("out.wasm");
        let (code, stdout, err) = egret_cmd(&[
            "handler",
            "build",
            src.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{file}: {stdout}{err}");
        for w in wants {
            assert!(err.contains(w), "{file}: wanted {w:?} in:\n{err}");
        }
        assert!(!err.contains("Stack backtrace"), "{file}: {err}");
        assert!(!out.exists(), "{file}: an output was written");
    }
    // A missing toolchain names the package and the command.
    let src = tmp.path("ok.ts");
    std::fs::write(&src, "export function handle() {}\n").unwrap();
    let o = Command::new(bin("egret"))
        .args(["handler", "build", src.to_str().unwrap()])
        .env("EGRET_TOOLCHAIN_DIR", tmp.path("no-toolchain"))
        .output()
        .unwrap();
    let (code, _, err) = code_out_err(&o);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("npm install --prefix")
            && err.contains("@bytecodealliance/componentize-js@0.23.0"),
        "{err}"
    );
}

const GH_TOKEN: &str = "gh-6a1f0c9d2e7b43aa";
const TOKEN_A: &str = "tok-A-0e5d7c3b1a9f8e24";

/// The outbound-Worker examples in one language (`ext`: "ts" or "py"; `file` maps an example
/// to its file name in that language), each loaded at runtime and switched with `egret ctl`.
fn examples(lang: &str, file: impl Fn(&str) -> String) {
    let dir = if lang == "ts" { "ts" } else { "py" };
    let module = |example: &str| lang_handler(&format!("handlers-wasm/{dir}/{}", file(example)));
    let env = setup(
        &format!("lang-examples-{lang}"),
        "[secrets]\nGH_TOKEN = { env = \"GH_TOKEN\" }\nTOKEN_A = { env = \"TOKEN_A\" }\n\
         [kv]\n\"token-secret\" = \"TOKEN_A\"\n",
        &[("GH_TOKEN", GH_TOKEN), ("TOKEN_A", TOKEN_A)],
    );
    let curl = |url: &str| {
        let (code, out, err) = env.topo.curl(&["-i", url]);
        assert_eq!(code, 0, "{lang} {url}: {err}");
        out
    };
    let body = |resp: &str| resp.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();

    // Header injection for one host: web.test gets the credential, other.test does not.
    env.load(
        "inject",
        &module("inject-header"),
        &[
            "--params",
            r#"{"header":"x-auth-token","secret":"GH_TOKEN"}"#,
            "--secret",
            "GH_TOKEN",
        ],
    );
    let (code, out, err) = ctl(&env.sock, &["set-outbound-by-host", "web.test", "inject"]);
    assert_eq!(code, 0, "{out}{err}");
    let r = curl("http://web.test/echo");
    assert!(
        r.starts_with("HTTP/1.1 200"),
        "{lang}: {r}\n{}",
        env.egret.logs()
    );
    let echo = json(&body(&r));
    assert_injected_and_masked(&echo, "x-auth-token", GH_TOKEN);
    assert_eq!(
        echo["headers"]["x-egret-handler"], "inject-header",
        "{lang}"
    );

    // A per-sandbox key from kv: the sandbox's kv names TOKEN_A; another key names nothing.
    env.load(
        "per-sandbox",
        &module("per-sandbox-token"),
        &["--secret", "TOKEN_A"],
    );
    let (code, out, err) = ctl(
        &env.sock,
        &["set-outbound-by-host", "kv.test", "per-sandbox"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let echo = json(&body(&curl("http://kv.test/echo")));
    assert_eq!(
        echo["headers_sha256"]["authorization"],
        sha256_hex(format!("Bearer {TOKEN_A}").as_bytes()),
        "{lang}: {echo}"
    );
    let (code, out, err) = ctl(
        &env.sock,
        &[
            "set-outbound-by-host",
            "kv.test",
            "per-sandbox",
            "--params",
            r#"{"key":"no-such-key"}"#,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let r = curl("http://kv.test/echo");
    assert!(r.starts_with("HTTP/1.1 403"), "{lang}: {r}");
    assert!(
        r.contains(&format!(
            "no token configured for sandbox lang-examples-{lang} (kv key no-such-key)"
        )),
        "{lang}: {r}"
    );

    // allow-hosts / no-http as the catch-all, switched at runtime.
    env.load("allow-hosts", &module("allow-hosts"), &[]);
    env.load("no-http", &module("no-http"), &[]);
    env.outbound("allow-hosts", Some(r#"{"hosts":["api.test"]}"#));
    let r = curl("http://api.test/echo");
    assert!(r.starts_with("HTTP/1.1 200"), "{lang}: {r}");
    let echo = json(&body(&r));
    assert_eq!(echo["headers"]["x-egret-handler"], "allow-hosts");
    // The credential went to its one host only.
    assert!(echo["headers"]["x-auth-token"].is_null(), "{lang}: {echo}");
    let r = curl("http://blocked.test/echo");
    assert!(r.starts_with("HTTP/1.1 403"), "{lang}: {r}");
    assert!(
        r.contains("host blocked.test is not allowed by handler allow-hosts"),
        "{lang}: {r}"
    );
    env.outbound("no-http", None);
    let r = curl("http://api.test/echo");
    assert!(r.starts_with("HTTP/1.1 403"), "{lang}: {r}");
    assert!(r.contains("HTTP egress disabled by policy"), "{lang}: {r}");
    env.outbound("allow-hosts", Some(r#"{"hosts":["*.test"]}"#));
    let r = curl("http://blocked.test/echo");
    assert!(r.starts_with("HTTP/1.1 200"), "{lang}: {r}");
    assert!(!env.egret.logs().contains(GH_TOKEN) && !env.egret.logs().contains(TOKEN_A));
}

#[test]
fn outbound_worker_examples_in_typescript() {
    examples("ts", |e| format!("{e}.ts"));
}

#[test]
fn outbound_worker_examples_in_python() {
    examples("py", |e| format!("{}.py", e.replace('-', "_")));
}

#[test]
fn compiling_an_uploaded_module_stalls_neither_the_admin_socket_nor_traffic() {
    // A JavaScript component takes wasmtime seconds to compile (no artifact cache here): while
    // it compiles, admin requests and sandbox traffic are served by the running generation.
    let module = lang_handler("handlers-wasm/ts/get-only.ts");
    let topo = Topology::new(SandboxNet::LoOnly);
    let up = Upstream::start(&topo, "up", None);
    let p = write(
        &topo,
        "policy.toml",
        "internet = false\nallowed_hosts = [\"web.test\"]\n[resolve]\n\"web.test\" = \"10.200.0.2\"\n",
    );
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let egret = Egret::start(
        &topo,
        "lang-compile",
        &["--policy", &p, "--admin-socket", &sock],
    )
    .expect("egret starts");
    let pid = egret.proc.child.id();
    let before = proc_cpu_secs(pid);
    let upload = {
        let (sock, module) = (sock.clone(), module.clone());
        std::thread::spawn(move || {
            ctl(
                &sock,
                &["module", "upload", "slow", module.to_str().unwrap()],
            )
        })
    };
    // The compile has started once egret (idle until now) has used CPU for a while.
    assert!(
        wait_until(Duration::from_secs(60), || proc_cpu_secs(pid)
            >= before + 0.3),
        "egret did not start compiling the upload\n{}",
        egret.logs()
    );
    let (code, out, err) = ctl(&sock, &["status"]);
    assert_eq!(code, 0, "status during the compile: {out}{err}");
    assert!(out.contains("lang-compile"), "{out}");
    let (code, out, err) = topo.curl(&["http://web.test/echo?during-compile"]);
    assert_eq!(code, 0, "a request during the compile: {err}");
    assert_eq!(json(&out)["path"], "/echo?during-compile", "{out}");
    assert!(
        !upload.is_finished(),
        "the upload finished before the probes: the module compiled too fast to show that \
         nothing waits for a compile"
    );
    let (code, out, err) = upload.join().unwrap();
    assert_eq!(code, 0, "module upload: {out}{err}\n{}", egret.logs());
    drop(up);
}
