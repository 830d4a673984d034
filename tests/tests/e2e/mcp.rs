//! MCP tool calls governed by `mcp-guard`, with the real SDKs from the registries: the Python
//! `mcp` package (FastMCP servers answering in JSON and in server-sent events, its client) and
//! the TypeScript `@modelcontextprotocol/sdk` client, through egret intercepting HTTPS. An
//! allowed tool works, a denied one comes back to the client as an MCP error (the client
//! goes on), an argument rule, `tools/list` filtered, a pinned server name, batches, malformed
//! JSON-RPC, the error in the format the client accepts, and the audit events and the guard's
//! log naming each tool.
use egret_e2e::*;
use std::path::PathBuf;
use std::time::Duration;

/// argv: cert, key, port, ready file; one FastMCP server per host name (see the file).
const MCP_SERVER: &str = include_str!("../../clients/mcp_server.py");
/// argv: CA, URL, transport (`http` or `sse`).
const MCP_CLIENT_PY: &str = include_str!("../../clients/mcp_client.py");
/// argv: the SDK's npm prefix, URL.
const MCP_CLIENT_JS: &str = include_str!("../../clients/mcp_client.js");

const HOSTS: [&str; 5] = [
    "mcp.test",
    "stream.test",
    "legacy.test",
    "impostor.test",
    "split.test",
];

/// The response phase of the guard's binding: buffered answers.
const BUFFER: &str = r#"{ mode = "buffer", max_bytes = 1048576 }"#;
/// Streamed answers, each event checked before it is sent.
const STREAM: &str = r#"{ mode = "stream", max_event_bytes = 65536 }"#;

/// What the clients print, in order, for the policy below.
const EXPECTED: [&str; 4] = [
    "TOOLS create_issue,echo",
    "REFUSED delete_repo code=-32003 mcp-guard: tool \"delete_repo\" is denied by deny_tools pattern \"delete_*\"",
    "REFUSED create_issue code=-32003 mcp-guard: tool \"create_issue\": argument repo = \"prod\" is not allowed; rule args.create_issue.repo requires glob \"sandbox-*\"",
    "DONE",
];

struct Env {
    topo: Topology,
    server: Proc,
    egret: Egret,
    ca: String,
}

impl Env {
    fn start(sandbox: &str, response: &str) -> Env {
        let topo = Topology::new(SandboxNet::LoOnly);
        let pki = upstream_pki(&topo.tmp.0, "mcp", &HOSTS);
        let ready = topo.tmp.path("mcp.ready");
        let mut cmd = topo.up.cmd("python3");
        cmd.args(["-c", MCP_SERVER]);
        cmd.args([&pki.cert, &pki.key]);
        cmd.args(["443".as_ref(), ready.as_os_str()]);
        let mut server = spawn(cmd, &topo.tmp.0, "mcp-server");
        wait_ready(&mut server, &ready, Duration::from_secs(30))
            .expect("FastMCP server (pip install mcp==1.30.0: scripts/setup.sh does)");
        let mut policy = String::from("internet = false\nintercept_https = true\n\n[resolve]\n");
        for h in HOSTS {
            policy.push_str(&format!("\"{h}\" = \"10.200.0.2\"\n"));
        }
        policy.push_str(&format!(
            r#"
[handlers.mcp]
module = "{module}"
body = {{ max_bytes = 1048576 }}
response = {response}

[handlers.mcp.params]
allow_tools = ["echo", "create_*"]
deny_tools = ["delete_*"]
filter_lists = true
pin_server = "egret-test-server"

[handlers.mcp.params.args.create_issue]
repo = "sandbox-*"
"#,
            module = handler_module("mcp-guard"),
        ));
        for h in HOSTS {
            policy.push_str(&format!(
                "\n[[routes]]\nhost = \"{h}\"\nhandler = \"mcp\"\n"
            ));
        }
        let (egret, ca) = Egret::start_intercepting(&topo, sandbox, &policy, &pki.ca, &[], &[])
            .expect("egret starts");
        Env {
            topo,
            server,
            egret,
            ca,
        }
    }

    fn context(&self, out: &str) -> String {
        format!(
            "{out}\nserver: {}\negret: {}",
            self.server.output(),
            self.egret.logs()
        )
    }

    /// The Python client against `url`; its output.
    fn python(&self, url: &str, transport: &str) -> (bool, String) {
        let o = self
            .topo
            .in_sandbox("python3", &["-c", MCP_CLIENT_PY, &self.ca, url, transport]);
        (o.status.success(), all_output(&o))
    }

    /// The TypeScript SDK's client against `url` over `transport` (`http` or `sse`); its
    /// output.
    fn node(&self, url: &str, transport: &str) -> (bool, String) {
        let sdk = ts_sdk();
        assert!(
            sdk.join("node_modules/@modelcontextprotocol/sdk/package.json")
                .exists(),
            "the TypeScript MCP SDK is missing in {} (scripts/setup.sh installs it)",
            sdk.display()
        );
        let mut cmd = self.topo.sbx.cmd("node");
        cmd.args(["-e", MCP_CLIENT_JS, "--"]);
        cmd.arg(&sdk).arg(url);
        cmd.env("NODE_EXTRA_CA_CERTS", &self.ca);
        cmd.env("MCP_TRANSPORT", transport);
        let o = cmd.output().unwrap();
        (o.status.success(), all_output(&o))
    }

    /// `GET` an event stream from `host`; (curl's exit code, its stderr, the body).
    fn get_stream(&self, host: &str, path: &str) -> (i32, String, String) {
        let url = format!("https://{host}{path}");
        let (code, out, err) = self.topo.curl(&[
            "--cacert",
            &self.ca,
            "-N",
            "-H",
            "accept: text/event-stream",
            &url,
        ]);
        (code, err, out)
    }

    /// POST `body` with `accept`; (status, content-type, body).
    fn post(&self, host: &str, accept: &str, body: &str) -> (u16, String, String) {
        let url = format!("https://{host}/mcp");
        let (code, out, err) = self.topo.curl(&[
            "--cacert",
            &self.ca,
            "-w",
            "\n%{http_code} %{content_type}",
            "-H",
            "content-type: application/json",
            "-H",
            &format!("accept: {accept}"),
            "--data-binary",
            body,
            &url,
        ]);
        assert_eq!(code, 0, "{err}");
        let (body, tail) = out.rsplit_once('\n').unwrap();
        let (status, ctype) = tail.split_once(' ').unwrap();
        (status.parse().unwrap(), ctype.to_owned(), body.to_owned())
    }
}

fn assert_governed(out: &str, ctx: &str) {
    let mut at = 0;
    for want in EXPECTED {
        let found = out[at..].find(want);
        assert!(found.is_some(), "missing (in order) {want:?}\n{ctx}");
        at += found.unwrap() + want.len();
    }
    assert!(out.contains("SERVER egret-test-server"), "{ctx}");
    assert!(out.contains("echo: hi"), "{ctx}");
    assert!(out.contains("created issue in sandbox-7: ok"), "{ctx}");
    // The client went on after each refusal.
    assert!(out.contains("echo: still alive"), "{ctx}");
}

/// The npm prefix of the TypeScript SDK (scripts/setup.sh installs it there).
fn ts_sdk() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    cache.join("egret/mcp-sdk")
}

#[test]
fn python_and_typescript_sdks_cannot_call_or_see_a_tool_the_policy_does_not_allow() {
    let env = Env::start("mcp-sdks", BUFFER);
    // Streamable HTTP answering in JSON, then in server-sent events: the Python client.
    for host in ["mcp.test", "stream.test"] {
        let (ok, out) = env.python(&format!("https://{host}/mcp"), "http");
        let ctx = env.context(&out);
        assert!(ok, "{host}: {ctx}");
        assert_governed(&out, &ctx);
    }
    // The TypeScript client, both answer formats.
    for host in ["mcp.test", "stream.test"] {
        let (ok, out) = env.node(&format!("https://{host}/mcp"), "http");
        let ctx = env.context(&out);
        assert!(ok, "{host}: {ctx}");
        assert_governed(&out, &ctx);
    }
    // Nothing refused ever reached the server.
    let server = env.server.output();
    assert!(!server.contains("DELETED"), "{server}");
    assert!(!server.contains("ISSUE prod"), "{server}");
    assert_eq!(server.matches("ISSUE sandbox-7 ok").count(), 4, "{server}");
    // The audit event of every call names its tool and the decision (`handler_fields`).
    let events = env.egret.audit_events();
    let fields = |tool: &str, decision: &str| {
        events
            .iter()
            .filter(|e| {
                e["handler_fields"]["mcp.tool"] == tool
                    && e["handler_fields"]["decision"] == decision
            })
            .count()
    };
    let ctx = format!("{events:#?}");
    // Two runs of each client: echo twice per run, the rest once.
    assert_eq!(fields("echo", "allow"), 8, "{ctx}");
    assert_eq!(fields("delete_repo", "deny"), 4, "{ctx}");
    assert_eq!(fields("create_issue", "allow"), 4, "{ctx}");
    assert_eq!(fields("create_issue", "deny"), 4, "{ctx}");
    let denied = events
        .iter()
        .find(|e| e["handler_fields"]["mcp.tool"] == "delete_repo")
        .unwrap();
    assert_eq!(
        denied["handler_fields"]["mcp.method"], "tools/call",
        "{denied}"
    );
    assert_eq!(denied["handler_fields"]["rule"], "deny_tools", "{denied}");
    assert_eq!(denied["decision"], "respond", "{denied}");
    let hidden = events
        .iter()
        .filter(|e| e["handler_fields"]["mcp.hidden"] == "delete_repo")
        .count();
    assert_eq!(hidden, 4, "every tools/list answer hid delete_repo: {ctx}");
    // The guard's log names every tool called, allowed or not.
    let logs = env.egret.logs();
    for line in [
        "mcp.method=tools/call mcp.tool=echo decision=allow",
        "mcp.method=tools/call mcp.tool=delete_repo decision=deny rule=deny_tools",
        "mcp.method=tools/call mcp.tool=create_issue decision=deny rule=args.create_issue.repo",
        "mcp.method=tools/list hidden=delete_repo",
    ] {
        assert!(logs.contains(line), "no {line:?} in\n{logs}");
    }
}

#[test]
fn refusals_take_the_clients_format_and_malformed_or_mixed_bodies_are_refused_clearly() {
    let env = Env::start("mcp-wire", BUFFER);
    let denied = r#"{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"delete_repo","arguments":{"repo":"x"}}}"#;
    // JSON for a client that takes JSON.
    let (status, ctype, body) = env.post("mcp.test", "application/json, text/event-stream", denied);
    assert_eq!(
        (status, ctype.as_str()),
        (200, "application/json"),
        "{body}"
    );
    let v = json(&body);
    assert_eq!(v["id"], 41);
    assert_eq!(v["error"]["code"], -32003);
    assert_eq!(v["error"]["data"]["tool"], "delete_repo");
    // One server-sent event for a client that takes only an event stream.
    let (status, ctype, body) = env.post("stream.test", "text/event-stream", denied);
    assert_eq!(
        (status, ctype.as_str()),
        (200, "text/event-stream"),
        "{body}"
    );
    let data = body
        .strip_prefix("event: message\ndata: ")
        .and_then(|d| d.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not one SSE event: {body:?}"));
    assert_eq!(json(data)["id"], 41);
    // A batch with one refused element is refused whole, naming it.
    let batch = format!(
        r#"[{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"a"}}}}}},{denied}]"#
    );
    let (status, _, body) = env.post("mcp.test", "application/json", &batch);
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v[0]["id"], 1);
    let whole = v[0]["error"]["message"].as_str().unwrap();
    assert!(
        whole.contains("1 of its 2 elements was refused: [1] tool \"delete_repo\""),
        "{whole}"
    );
    assert_eq!(v[1]["id"], 41);
    // Not JSON, and JSON that is not JSON-RPC: 400 saying what is wrong.
    let (status, _, body) = env.post("mcp.test", "application/json", "{\"jsonrpc\": \"2.0\",");
    assert_eq!(status, 400, "{body}");
    let v = json(&body);
    assert_eq!(v["error"]["code"], -32700);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );
    let (status, _, body) = env.post(
        "mcp.test",
        "application/json",
        r#"{"id":1,"method":"ping"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\\\"jsonrpc\\\": \\\"2.0\\\""), "{body}");
    // A server naming itself otherwise is refused at initialize.
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#;
    let (status, _, body) = env.post("impostor.test", "application/json, text/event-stream", init);
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["id"], 0);
    assert_eq!(
        v["error"]["message"],
        "mcp-guard: the MCP server says it is \"impostor\", not the pinned server \"egret-test-server\" (pin_server)"
    );
    let refused = env
        .egret
        .wait_audit(Duration::from_secs(5), |e| {
            e["host"] == "impostor.test" && e["handler_fields"]["rule"] == "pin_server"
        })
        .unwrap_or_else(|| panic!("no pin_server audit event: {:#?}", env.egret.audit_events()));
    assert_eq!(
        refused["handler_fields"]["mcp.server"], "impostor",
        "{refused}"
    );
    // The older HTTP+SSE transport's event stream cannot be checked whole: refused at once,
    // and the client fails saying so instead of hanging.
    let (ok, out) = env.python("https://legacy.test/sse", "sse");
    let ctx = env.context(&out);
    assert!(!ok, "{ctx}");
    assert!(out.contains("405"), "{ctx}");
    assert!(!env.server.output().contains("DELETED"));
    let (_, _, body) = env.get_stream("split.test", "/sse");
    assert!(body.contains("response = { mode = \"stream\" }"), "{body}");
}

/// With `response = { mode = "stream" }` the guard checks each event before it is sent: the
/// HTTP+SSE transport (`GET /sse` + `POST /messages/`, the Python and the TypeScript SDK's
/// clients) is governed like streamable HTTP (a refused call's error arrives on the stream,
/// where the client waits for it), streamable
/// HTTP's answers too (SSE and JSON), an event the upstream wrote in 7-byte pieces is
/// checked whole, and an event past `max_event_bytes` ends the response with an audited
/// error.
#[test]
fn the_stream_mode_governs_the_http_sse_transport_and_checks_each_event_whole() {
    let env = Env::start("mcp-stream", STREAM);
    for (url, transport) in [
        ("https://legacy.test/sse", "sse"),
        ("https://stream.test/mcp", "http"),
        ("https://mcp.test/mcp", "http"),
    ] {
        let (ok, out) = env.python(url, transport);
        let ctx = env.context(&out);
        assert!(ok, "{url}: {ctx}");
        assert_governed(&out, &ctx);
    }
    // The TypeScript SDK's client over HTTP+SSE too.
    let (ok, out) = env.node("https://legacy.test/sse", "sse");
    let ctx = env.context(&out);
    assert!(ok, "node over sse: {ctx}");
    assert_governed(&out, &ctx);
    let server = env.server.output();
    assert!(!server.contains("DELETED"), "{server}");
    assert!(!server.contains("ISSUE prod"), "{server}");
    assert_eq!(server.matches("ISSUE sandbox-7 ok").count(), 4, "{server}");
    let refused = env
        .egret
        .wait_audit(Duration::from_secs(5), |e| {
            e["host"] == "legacy.test" && e["handler_fields"]["mcp.tool"] == "delete_repo"
        })
        .unwrap_or_else(|| panic!("no audit event: {:#?}", env.egret.audit_events()));
    assert_eq!(refused["handler_fields"]["decision"], "deny", "{refused}");

    // An event written in 7-byte pieces (some ending between CR and LF) is checked whole.
    let (code, _, body) = env.get_stream("split.test", "/sse");
    assert_eq!(code, 0, "{body}");
    // Line endings as a client reads them (a CR alone ends a line too).
    let lines = body.replace("\r\n", "\n").replace('\r', "\n");
    let events: Vec<&str> = lines.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "{body:?}");
    assert_eq!(events[0], ": split upstream", "{body:?}");
    let data = events[1]
        .strip_prefix("event: message\ndata: ")
        .unwrap_or_else(|| panic!("not one whole event: {body:?}"));
    let listing = json(data);
    assert_eq!(listing["result"]["tools"][0]["name"], "echo", "{body:?}");
    assert_eq!(listing["result"]["tools"].as_array().unwrap().len(), 1);
    assert!(events[2].contains(r#""id":2"#), "{body:?}");
    // What the stream phase attached is in the stream's audit event, written at its end.
    let streamed = env
        .egret
        .wait_audit(Duration::from_secs(5), |e| {
            e["host"] == "split.test" && e["path"] == "/sse"
        })
        .unwrap_or_else(|| panic!("no audit event: {:#?}", env.egret.audit_events()));
    assert_eq!(
        streamed["handler_fields"]["mcp.hidden"], "delete_repo",
        "{streamed}"
    );

    // An event past max_event_bytes ends the response; the audit event says why.
    let (code, _, _) = env.get_stream("split.test", "/big");
    assert_ne!(code, 0, "the cut response must not look complete");
    let cut = env
        .egret
        .wait_audit(Duration::from_secs(5), |e| {
            e["host"] == "split.test" && e["path"] == "/big"
        })
        .unwrap_or_else(|| panic!("no audit event: {:#?}", env.egret.audit_events()));
    let error = cut["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("handler mcp") && error.contains("max_event_bytes"),
        "{cut}"
    );
}
