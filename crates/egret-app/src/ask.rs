//! `--ask`: the decisions egret asks for when no rule decides a destination. A connection or
//! request is held (egret-proxy) while its question is pending here; it is answered from the
//! controlling terminal (a thread of its own reads `/dev/tty`), or denied when nobody answers
//! within `--ask-timeout` — at once when there is no terminal to ask.
//!
//! An approval is for the one connection or request (`once`), for the rest of this run
//! (`run`: the host is added to the running policy), or for good (`always`: also written into
//! the policy file, comments kept).
use crate::control::ControlPlane;
use egret_proxy::{Answer, DecidedBy, Question};
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How far an approval reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This connection or request only.
    Once,
    /// Every connection to the host until egret exits.
    Run,
    /// As `Run`, and written into the policy file.
    Always,
}

/// A person's (or a supervisor's) reply: approve with a scope, or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Let it through.
    Approve(Scope),
    /// Refuse it.
    Deny,
}

/// What the terminal prompt accepts: `o`nce, `r`un, `a`lways, `d`eny (or the whole words);
/// `None` for anything else (the prompt is asked again).
pub fn parse_reply(line: &str) -> Option<Reply> {
    match line.trim().to_ascii_lowercase().as_str() {
        "o" | "once" | "y" | "yes" => Some(Reply::Approve(Scope::Once)),
        "r" | "run" => Some(Reply::Approve(Scope::Run)),
        "a" | "always" => Some(Reply::Approve(Scope::Always)),
        "d" | "deny" | "n" | "no" => Some(Reply::Deny),
        _ => None,
    }
}

/// The prompt for a question.
pub fn prompt(id: u64, q: &Question) -> String {
    let what = match (&q.method, &q.path) {
        (Some(m), Some(p)) => format!(" ({m} {p})"),
        _ => String::new(),
    };
    format!(
        "egret: [{id}] no rule decides {}:{}{what}. Allow [o]nce, for this [r]un, [a]lways (into the policy file), or [d]eny? ",
        q.host, q.port
    )
}

/// Why the policy file could not take an `always` approval.
#[derive(Debug, thiserror::Error)]
pub enum RememberError {
    /// The policy is JSON or embedded: there is no TOML file to edit.
    #[error("no TOML policy file to write {0} into (give --policy FILE.toml)")]
    NoFile(String),
    /// The file is not TOML egret can edit.
    #[error("cannot edit policy file {}: {why}", path.display())]
    Edit {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// The policy text with `host` allowed for good, comments and layout kept: appended to
/// `allowed_hosts` when the policy has that list (a host outside it is refused by it), else
/// as a `[[routes]]` entry with no handler (allowed): adding the first `allowed_hosts` entry
/// would refuse every host the list does not name.
pub fn remember(text: &str, host: &str) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    let has_list = doc
        .get("allowed_hosts")
        .and_then(|v| v.as_array())
        .is_some_and(|a| !a.is_empty());
    if has_list {
        let list = doc["allowed_hosts"]
            .as_array_mut()
            .ok_or("allowed_hosts is not an array")?;
        if !list.iter().any(|v| v.as_str() == Some(host)) {
            list.push(host);
        }
        return Ok(doc.to_string());
    }
    let mut route = toml_edit::Table::new();
    route.insert(
        "hosts",
        toml_edit::value(toml_edit::Array::from_iter([host])),
    );
    match doc
        .entry("routes")
        .or_insert(toml_edit::Item::ArrayOfTables(Default::default()))
        .as_array_of_tables_mut()
    {
        Some(routes) => routes.push(route),
        None => return Err("routes is not an array of tables".into()),
    }
    Ok(doc.to_string())
}

struct Pending {
    question: Question,
    tx: oneshot::Sender<Answer>,
}

/// What a settled question's prompt is annotated with: the decision and who made it.
pub fn settled_note(reply: Reply, by: DecidedBy, timeout: Duration) -> String {
    let what = match reply {
        Reply::Approve(Scope::Once) => "allowed once",
        Reply::Approve(Scope::Run) => "allowed for this run",
        Reply::Approve(Scope::Always) => "allowed (also written into the policy file)",
        Reply::Deny => "denied",
    };
    let who = match by {
        DecidedBy::Terminal => "answered here".to_string(),
        DecidedBy::Admin => "answered through the admin socket".to_string(),
        DecidedBy::Timeout => format!("no answer within {timeout:?}"),
        DecidedBy::Policy => "by the policy".to_string(),
    };
    format!("{what} ({who})")
}

/// What the terminal thread is told, in order.
enum Event {
    /// Question `id` waits for its turn on the terminal.
    Ask(u64),
    /// A line typed at the terminal, and when it was read.
    Line(String, Instant),
    /// Question `id` was decided (here, by a supervisor or by the timeout): the note for it.
    Settled(u64, String),
    /// The terminal is gone.
    Closed,
}

/// The terminal's state, without I/O: the question whose prompt is on screen (and since when),
/// and those waiting their turn.
#[derive(Default)]
struct Screen {
    shown: Option<(u64, Instant)>,
    waiting: VecDeque<u64>,
}

impl Screen {
    fn ask(&mut self, id: u64) {
        self.waiting.push_back(id);
    }

    /// The next question to prompt for, when no prompt is on screen.
    fn next(&mut self, now: Instant) -> Option<u64> {
        if self.shown.is_some() {
            return None;
        }
        let id = self.waiting.pop_front()?;
        self.shown = Some((id, now));
        Some(id)
    }

    /// The question a line read at `at` answers: the one on screen, unless the line was read
    /// before its prompt was shown (typed for a prompt that is gone).
    fn answered_by(&self, at: Instant) -> Option<u64> {
        self.shown
            .filter(|(_, since)| *since <= at)
            .map(|(id, _)| id)
    }

    /// Question `id` is decided: true when its prompt is the one on screen (and now stale).
    fn settle(&mut self, id: u64) -> bool {
        self.waiting.retain(|w| *w != id);
        let on_screen = self.shown.is_some_and(|(s, _)| s == id);
        if on_screen {
            self.shown = None;
        }
        on_screen
    }
}

/// The pending questions of one egret, and who answers them.
pub struct AskBroker {
    timeout: Duration,
    next: AtomicU64,
    pending: Mutex<BTreeMap<u64, Pending>>,
    /// The terminal thread's queue (None: no controlling terminal).
    terminal: Option<std::sync::mpsc::Sender<Event>>,
    control: OnceLock<Weak<ControlPlane>>,
    /// Whether a supervisor can answer (an admin socket is served).
    supervised: bool,
    policy: Arc<arc_swap::ArcSwap<egret_policy::CompiledPolicy>>,
    policy_file: Option<PathBuf>,
    rt: tokio::runtime::Handle,
}

impl AskBroker {
    /// A broker denying after `timeout`, asking on `/dev/tty` when egret has one and over
    /// the admin API when `supervised`; `always` approvals go into `policy_file`.
    pub fn new(
        timeout: Duration,
        supervised: bool,
        policy: Arc<arc_swap::ArcSwap<egret_policy::CompiledPolicy>>,
        policy_file: Option<PathBuf>,
    ) -> Arc<AskBroker> {
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .ok();
        let (tx, rx) = std::sync::mpsc::channel();
        let broker = Arc::new(AskBroker {
            timeout,
            next: AtomicU64::new(1),
            pending: Mutex::new(BTreeMap::new()),
            terminal: tty.is_some().then_some(tx),
            control: OnceLock::new(),
            supervised,
            policy,
            policy_file,
            rt: tokio::runtime::Handle::current(),
        });
        if let Some(tty) = tty {
            let weak = Arc::downgrade(&broker);
            let lines = broker.terminal.clone();
            let input = tty.try_clone();
            let _ = std::thread::Builder::new()
                .name("egret-ask".into())
                .spawn(move || terminal(tty, rx, weak));
            // Lines are read on a thread of their own, so a prompt answered elsewhere can be
            // taken off the screen while a read is outstanding.
            if let (Some(lines), Ok(input)) = (lines, input) {
                let _ = std::thread::Builder::new()
                    .name("egret-ask-input".into())
                    .spawn(move || read_lines(input, lines));
            }
        }
        broker
    }

    /// Where `run` and `always` approvals change the running policy.
    pub fn set_control(&self, control: &Arc<ControlPlane>) {
        let _ = self.control.set(Arc::downgrade(control));
    }

    /// The questions waiting for an answer, oldest first.
    pub fn pending(&self) -> Vec<(u64, Question)> {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.iter().map(|(id, q)| (*id, q.question.clone())).collect()
    }

    /// Answer question `id`: `Ok(false)` when it is no longer pending. An approval for the
    /// run (or for good) also lets through every other pending question about the host.
    pub async fn decide(&self, id: u64, reply: Reply, by: DecidedBy) -> Result<bool, String> {
        let Some(first) = self.take(id) else {
            return Ok(false);
        };
        let scope = match reply {
            Reply::Deny => {
                let _ = first.tx.send(Answer { allow: false, by });
                self.settled(id, reply, by);
                return Ok(true);
            }
            Reply::Approve(scope) => scope,
        };
        let host = first.question.host.clone();
        let mut settled = vec![(id, first)];
        if scope != Scope::Once {
            if let Err(e) = self.allow_for_run(&host).await {
                // Still let this one through: the person said yes to it.
                let _ = settled.remove(0).1.tx.send(Answer { allow: true, by });
                self.settled(id, Reply::Approve(Scope::Once), by);
                return Err(e);
            }
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let same: Vec<u64> = p
                .iter()
                .filter(|(_, q)| q.question.host == host)
                .map(|(id, _)| *id)
                .collect();
            settled.extend(same.into_iter().filter_map(|id| Some((id, p.remove(&id)?))));
        }
        let remembered = if scope == Scope::Always {
            self.remember(&host).map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        for (id, s) in settled {
            let _ = s.tx.send(Answer { allow: true, by });
            self.settled(id, reply, by);
        }
        remembered.map(|()| true)
    }

    /// Tell the terminal that question `id` is decided, so its prompt does not stay on screen
    /// waiting for an answer that no longer counts.
    fn settled(&self, id: u64, reply: Reply, by: DecidedBy) {
        if let Some(t) = &self.terminal {
            let _ = t.send(Event::Settled(id, settled_note(reply, by, self.timeout)));
        }
    }

    /// Question `id`, while it is pending.
    fn question(&self, id: u64) -> Option<Question> {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.get(&id).map(|q| q.question.clone())
    }

    fn take(&self, id: u64) -> Option<Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// Add `host` to the running policy, as the admin API would.
    async fn allow_for_run(&self, host: &str) -> Result<(), String> {
        let control = self
            .control
            .get()
            .and_then(Weak::upgrade)
            .ok_or("egret is stopping")?;
        let change = if !self.policy.load().config().allowed_hosts.is_empty() {
            egret_admin::Change::AllowedHosts {
                add: vec![host.to_string()],
                remove: vec![],
            }
        } else {
            egret_admin::Change::SetOutboundByHost(vec![native_allow(host)])
        };
        egret_admin::Control::apply(&*control, change, None)
            .await
            .map(|_| ())
            .map_err(|e| format!("could not allow {host} for this run: {e}"))
    }

    fn remember(&self, host: &str) -> Result<(), RememberError> {
        let path = match &self.policy_file {
            Some(p) if p.extension().is_none_or(|e| e != "json") => p,
            _ => return Err(RememberError::NoFile(host.to_string())),
        };
        let edit = |why: String| RememberError::Edit {
            path: path.clone(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| edit(e.to_string()))?;
        let new = remember(&text, host).map_err(edit)?;
        let mode = file_mode(path);
        egret_fs::write_atomic(path, new.as_bytes(), mode, true).map_err(|e| edit(e.to_string()))
    }

    /// Hold a question until it is answered or the timeout ends.
    async fn wait(self: Arc<Self>, question: Question) -> Answer {
        if self.terminal.is_none() && !self.supervised {
            return Answer {
                allow: false,
                by: DecidedBy::Policy,
            };
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        tracing::info!(id, host = %question.host, port = question.port, "asking: no rule decides this destination");
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Pending { question, tx });
        if let Some(t) = &self.terminal {
            let _ = t.send(Event::Ask(id));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => answer,
            _ => {
                if self.take(id).is_some() {
                    self.settled(id, Reply::Deny, DecidedBy::Timeout);
                }
                Answer {
                    allow: false,
                    by: DecidedBy::Timeout,
                }
            }
        }
    }
}

/// The broker as the proxy holds it.
pub struct Asking(pub Arc<AskBroker>);

impl egret_proxy::Asker for Asking {
    fn ask(&self, question: Question) -> BoxFuture<'static, Answer> {
        Box::pin(self.0.clone().wait(question))
    }
}

/// A route allowing `host` with no handler.
fn native_allow(host: &str) -> egret_policy::RouteConfig {
    egret_policy::RouteConfig::rule([host], egret_policy::RouteAction::Allow)
}

fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777)
}

/// The terminal's input: each line with when it was read; `Closed` at the end.
fn read_lines(tty: std::fs::File, events: std::sync::mpsc::Sender<Event>) {
    for line in std::io::BufReader::new(tty).lines() {
        let Ok(line) = line else { break };
        if events.send(Event::Line(line, Instant::now())).is_err() {
            return;
        }
    }
    let _ = events.send(Event::Closed);
}

/// Discard what was typed at the terminal and not read yet (a half-typed answer to a prompt
/// that was answered elsewhere must not answer the next one).
fn discard_typed(tty: &std::fs::File) {
    // Best effort: a terminal that refuses leaves at most a stale line for the next prompt,
    // which is then asked again until its reply is understood.
    let _ = nix::sys::termios::tcflush(tty, nix::sys::termios::FlushArg::TCIFLUSH);
}

/// The terminal thread: one prompt at a time, asked again until the reply is understood; a
/// prompt whose question is decided elsewhere (a supervisor, the timeout, an approval for the
/// whole host) is annotated with that decision and the next one shown.
fn terminal(mut out: std::fs::File, rx: std::sync::mpsc::Receiver<Event>, broker: Weak<AskBroker>) {
    let mut screen = Screen::default();
    while let Ok(event) = rx.recv() {
        let Some(b) = broker.upgrade() else { return };
        match event {
            Event::Ask(id) => screen.ask(id),
            Event::Line(line, at) => {
                let Some(id) = screen.answered_by(at) else {
                    continue;
                };
                let Some(reply) = parse_reply(&line) else {
                    if let Some(q) = b.question(id) {
                        let _ = write!(out, "\r\n{}", prompt(id, &q));
                        let _ = out.flush();
                    }
                    continue;
                };
                screen.settle(id);
                let rt = b.rt.clone();
                match rt.block_on(b.decide(id, reply, DecidedBy::Terminal)) {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = writeln!(out, "egret: [{id}] was already decided\r");
                    }
                    Err(e) => {
                        let _ = writeln!(out, "egret: [{id}] {e}\r");
                    }
                }
            }
            Event::Settled(id, note) => {
                if screen.settle(id) {
                    discard_typed(&out);
                    let _ = write!(out, "\r\negret: [{id}] {note}\r\n");
                    let _ = out.flush();
                }
            }
            Event::Closed => return,
        }
        while let Some(id) = screen.next(Instant::now()) {
            match b.question(id) {
                Some(q) => {
                    let _ = write!(out, "\r\n{}", prompt(id, &q));
                    let _ = out.flush();
                }
                // Decided before its turn came.
                None => {
                    screen.settle(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_understood_in_short_and_long_form() {
        assert_eq!(parse_reply("o\n"), Some(Reply::Approve(Scope::Once)));
        assert_eq!(parse_reply(" Run "), Some(Reply::Approve(Scope::Run)));
        assert_eq!(parse_reply("a"), Some(Reply::Approve(Scope::Always)));
        assert_eq!(parse_reply("deny"), Some(Reply::Deny));
        assert_eq!(parse_reply("maybe"), None);
        assert_eq!(parse_reply(""), None);
    }

    #[test]
    fn a_prompt_decided_elsewhere_leaves_the_screen_and_the_next_is_shown() {
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        let mut s = Screen::default();
        s.ask(1);
        s.ask(2);
        assert_eq!(s.next(t0), Some(1));
        assert_eq!(s.next(later(1)), None, "one prompt at a time");
        // A supervisor answers 1: its prompt is stale, 2 comes next.
        assert!(s.settle(1));
        assert_eq!(s.next(later(10)), Some(2));
        // A line read before 2's prompt was shown was typed for 1: it answers nothing.
        assert_eq!(s.answered_by(later(5)), None);
        assert_eq!(s.answered_by(later(10)), Some(2));
        assert_eq!(s.answered_by(later(20)), Some(2));
        // A question decided while waiting its turn is never shown.
        s.ask(3);
        assert!(!s.settle(3));
        assert!(s.settle(2));
        assert_eq!(s.next(later(30)), None);
        assert!(!s.settle(2), "settled twice");
    }

    #[test]
    fn the_note_says_what_was_decided_and_by_whom() {
        let t = Duration::from_secs(30);
        assert_eq!(
            settled_note(Reply::Approve(Scope::Once), DecidedBy::Admin, t),
            "allowed once (answered through the admin socket)"
        );
        assert_eq!(
            settled_note(Reply::Deny, DecidedBy::Timeout, t),
            "denied (no answer within 30s)"
        );
        assert!(
            settled_note(Reply::Approve(Scope::Run), DecidedBy::Terminal, t)
                .starts_with("allowed for this run")
        );
    }

    #[test]
    fn the_prompt_names_host_port_and_request() {
        let q = Question {
            host: "api.test".into(),
            port: 443,
            method: Some("GET".into()),
            path: Some("/x?[masked]".into()),
        };
        let p = prompt(7, &q);
        assert!(
            p.contains("[7]") && p.contains("api.test:443 (GET /x?[masked])"),
            "{p}"
        );
    }

    #[test]
    fn always_appends_to_allowed_hosts_keeping_comments() {
        let text = "# mine\nallowed_hosts = [\"a.test\"] # the list\n\n[resolve]\n";
        let out = remember(text, "b.test").unwrap();
        assert!(out.starts_with("# mine\n"), "{out}");
        assert!(out.contains("\"a.test\", \"b.test\"]"), "{out}");
        assert!(out.contains("# the list"), "{out}");
        assert_eq!(remember(&out, "b.test").unwrap(), out, "added twice");
        let cfg: egret_policy::PolicyConfig = toml::from_str(&out).unwrap();
        assert_eq!(cfg.allowed_hosts, ["a.test", "b.test"]);
    }

    #[test]
    fn without_allowed_hosts_always_adds_an_allowing_route() {
        let text = "# agent\n[[routes]]\nhost = \"api.test\"\nhandler = \"inject\"\n";
        let out = remember(text, "b.test").unwrap();
        assert!(out.starts_with(text), "{out}");
        let cfg: egret_policy::PolicyConfig = toml::from_str(&out).unwrap();
        assert_eq!(cfg.routes.len(), 2);
        assert_eq!(cfg.routes[1].hosts, ["b.test"]);
        assert_eq!(cfg.routes[1].handler, None);
        assert!(cfg.allowed_hosts.is_empty());
        assert!(remember("routes = 3\n", "b.test").is_err());
    }
}
