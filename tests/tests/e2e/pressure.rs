//! Handler instances under pressure: more concurrent long requests than instance slots
//! (`--max-handler-instances`) through a binding whose instance lives for the whole response
//! (`response = { mode = "observe" }`) wait for a slot in arrival order and all succeed while
//! the wait fits; past the wait bound or the waiter bound they get an exact `503` with
//! `Retry-After`; afterwards the sidecar serves again. Metrics and audit events say so.
use egret_e2e::*;
use std::collections::HashMap;
use std::time::Duration;

const SLOTS: usize = 3;
const WAIT_MS: u64 = 3000;
const WAITERS: usize = 2;

struct Env {
    topo: Topology,
    _up: Upstream,
    egret: Egret,
    sock: String,
}

impl Env {
    /// `curl -i http://slow.test/slow/MS` in the sandbox: (status, headers and body).
    fn slow(&self, ms: u64) -> (u16, String) {
        let url = format!("http://slow.test/slow/{ms}");
        let (code, out, err) = self.topo.curl(&["-i", "-w", "\n%{http_code}", &url]);
        assert_eq!(code, 0, "{err}\n{}", self.egret.logs());
        let (resp, status) = out.rsplit_once('\n').unwrap();
        (status.parse().unwrap(), resp.replace("\r\n", "\n"))
    }

    /// The metrics' samples without labels, by name.
    fn metrics(&self) -> HashMap<String, f64> {
        let out = admin_curl(&self.sock)
            .arg("http://egret/metrics")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect()
    }

    fn gauge(&self, name: &str) -> f64 {
        self.metrics().get(name).copied().unwrap_or(-1.0)
    }

    /// Wait until gauge `name` reads `want`.
    fn until_gauge(&self, name: &str, want: f64) {
        assert!(
            wait_until(Duration::from_secs(10), || self.gauge(name) == want),
            "{name} never {want}: {}\n{}",
            self.gauge(name),
            self.egret.logs()
        );
    }
}

fn setup(id: &str) -> Env {
    let topo = Topology::new(SandboxNet::LoOnly);
    let up = Upstream::start(&topo, "up", None);
    let policy = format!(
        r#"internet = false

[resolve]
"slow.test" = "10.200.0.2"

[secrets]
TOKEN = {{ env = "TOKEN" }}

[handlers.watch]
module = "{module}"
params = {{ header = "x-auth-token", secret = "TOKEN" }}
secrets = ["TOKEN"]
response = {{ mode = "observe" }}

[[routes]]
host = "slow.test"
handler = "watch"
"#,
        module = handler_module("inject-header"),
    );
    let p = write(&topo, "policy.toml", &policy);
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let audit = topo.tmp.path("audit.log").to_string_lossy().into_owned();
    let (slots, wait, waiters) = (SLOTS.to_string(), WAIT_MS.to_string(), WAITERS.to_string());
    let args = [
        "--policy",
        &p,
        "--admin-socket",
        &sock,
        "--audit-log",
        &audit,
        "--max-handler-instances",
        &slots,
        "--handler-instance-wait-ms",
        &wait,
        "--max-handler-instance-waiters",
        &waiters,
    ];
    let egret = Egret::start_with_env(&topo, id, &args, &[("TOKEN", "tok-pressure-1234")])
        .expect("egret starts");
    Env {
        topo,
        _up: up,
        egret,
        sock,
    }
}

#[test]
fn more_long_requests_than_instances_wait_then_get_exact_503s_and_recover() {
    let env = setup(&format!("pressure-{}", unique_id()));
    assert_eq!(env.gauge("egret_handler_instance_slots"), SLOTS as f64);

    // As many 1 s responses as slots and waiters, all at once: the waiters get slots as the
    // first responses end, within the wait bound; none fails.
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let all: Vec<_> = (0..SLOTS + WAITERS)
            .map(|_| s.spawn(|| env.slow(1000)))
            .collect();
        all.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (status, resp) in &statuses {
        assert_eq!(*status, 200, "{resp}\n{}", env.egret.logs());
    }
    let m = env.metrics();
    assert!(
        m["egret_handler_instance_wait_seconds_count"] >= 1.0,
        "no request waited: {m:?}"
    );
    assert_eq!(m["egret_handler_instance_refused_total"], 0.0);
    // Their audit events say how long they waited.
    let audit = env.topo.tmp.path("audit.log");
    let waited = || -> Vec<f64> {
        parse_audit(&std::fs::read_to_string(&audit).unwrap_or_default())
            .iter()
            .filter(|e| e["status"] == 200)
            .filter_map(|e| e["instance_wait_ms"].as_f64())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(5), || !waited().is_empty()),
        "no audit event of a wait"
    );
    assert!(waited().iter().all(|w| *w > 0.0), "{:?}", waited());

    // Every slot held by a long response; the waiters' queue full; then the bound passes.
    std::thread::scope(|s| {
        let holders: Vec<_> = (0..SLOTS)
            .map(|_| s.spawn(|| env.slow(WAIT_MS + 2500)))
            .collect();
        env.until_gauge("egret_handler_instances_in_use", SLOTS as f64);
        let waiters: Vec<_> = (0..WAITERS).map(|_| s.spawn(|| env.slow(10))).collect();
        env.until_gauge("egret_handler_instance_waiting", WAITERS as f64);
        // One more than the waiters' bound: refused at once.
        let (status, resp) = env.slow(10);
        assert_eq!(status, 503, "{resp}");
        assert!(resp.contains("\nretry-after: 1\n"), "{resp}");
        let body = resp.split_once("\n\n").unwrap().1;
        assert_eq!(
            body,
            format!(
                "egret: handler `watch` has no free instance: all {SLOTS} instance slots are in \
                 use and {WAITERS} requests already wait for one (egret run \
                 --max-handler-instances, --max-handler-instance-waiters); retry later\n"
            )
        );
        // The waiters: refused once the wait bound passed, with the bound and its flag.
        for w in waiters {
            let (status, resp) = w.join().unwrap();
            assert_eq!(status, 503, "{resp}");
            assert!(resp.contains("\nretry-after: 1\n"), "{resp}");
            assert!(resp.contains("\nx-egret-decision: error\n"), "{resp}");
            let body = resp.split_once("\n\n").unwrap().1;
            assert_eq!(
                body,
                format!(
                    "egret: handler `watch` has no free instance: all {SLOTS} instance slots \
                     stayed in use for {WAIT_MS} ms (egret run --max-handler-instances, \
                     --handler-instance-wait-ms); retry later\n"
                )
            );
        }
        for h in holders {
            let (status, resp) = h.join().unwrap();
            assert_eq!(status, 200, "{resp}");
        }
    });
    let m = env.metrics();
    assert_eq!(
        m["egret_handler_instance_refused_total"],
        (WAITERS + 1) as f64
    );
    assert_eq!(m["egret_handler_instance_waiting"], 0.0);
    assert_eq!(
        m["egret_handler_failures_total{kind=\"busy\"}"],
        (WAITERS + 1) as f64
    );

    // Recovered: requests get instances again, without waiting.
    for _ in 0..SLOTS + 1 {
        let (status, resp) = env.slow(10);
        assert_eq!(status, 200, "{resp}");
    }
    let events = || parse_audit(&std::fs::read_to_string(&audit).unwrap_or_default());
    assert!(wait_until(Duration::from_secs(5), || events()
        .iter()
        .filter(|e| e["status"] == 503)
        .count()
        == WAITERS + 1));
    let events = events();
    let refused: Vec<_> = events.iter().filter(|e| e["status"] == 503).collect();
    for e in &refused {
        assert_eq!(e["decision"], "error", "{e}");
        assert_eq!(e["handler"], "watch", "{e}");
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .starts_with("busy: handler `watch` has no free instance"),
            "{e}"
        );
        let w = e["instance_wait_ms"].as_f64().unwrap();
        assert!(w == 0.0 || w == WAIT_MS as f64, "{e}");
    }
    assert_eq!(
        refused
            .iter()
            .filter(|e| e["instance_wait_ms"] == 0.0)
            .count(),
        1,
        "one refused at once"
    );
    assert!(!env.egret.logs().contains("tok-pressure-1234"));
}
