//! Audit events: exactly one JSON object per HTTP request and one per opaque / pass-through
//! connection (field reference in the README, "Audit events").
//!
//! The data path only formats the line and hands it to a bounded channel ([`AuditSink`]); a
//! dedicated writer thread does the I/O (stdout or a file, reopened on demand for log
//! rotation) and feeds the admin socket's live tail. A full channel drops the event and counts
//! it rather than slowing the sandbox down.
//!
//! An event never carries a header value, a body or a query string: only names, the path with
//! the query masked, decisions, sizes and timings.
use crate::authority::Target;
use crate::body::{BoxError, ProxyBody};
use crate::conn::ConnInfo;
use crate::http_engine::Outcome;
use crate::metrics::{Decision, Metrics, TunnelProto};
use crate::Proxy;
use bytes::Bytes;
use egret_policy::CompiledPolicy;
use http::{Method, Response, Version};
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;
use std::borrow::Cow;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

/// Replace the query string with `?[masked]` (it often carries tokens).
pub fn mask_query(path: &str) -> Cow<'_, str> {
    match path.split_once('?') {
        Some((p, _)) => Cow::Owned(format!("{p}?[masked]")),
        None => Cow::Borrowed(path),
    }
}

/// Events buffered between the data path and the writer thread.
const CHANNEL_CAPACITY: usize = 16 * 1024;

/// The bounded queue to the writer. Not `sync_channel`: that one allocates and initialises
/// all of its slots up front (16k × 32 bytes = 512 KiB private memory in every sidecar, a
/// fifth of an idle one's). The unbounded channel grows in small blocks and frees them once
/// read; the count keeps the bound.
struct Queue {
    tx: Sender<Msg>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    /// Queue `msg` unless [`CHANNEL_CAPACITY`] messages are waiting or the writer is gone.
    fn try_send(&self, msg: Msg) -> Result<(), Msg> {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= CHANNEL_CAPACITY {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(msg);
        }
        self.tx.send(msg).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            e.0
        })
    }
}
/// Events buffered for each live-tail subscriber (slower ones are told how many they missed).
const LIVE_CAPACITY: usize = 1024;

/// Where audit lines go.
#[derive(Debug, Clone)]
pub enum AuditOutput {
    /// egret's standard output.
    Stdout,
    /// A file, appended to (created 0600), reopened by [`AuditSink::reopen`].
    File(PathBuf),
    /// Nowhere (live tail only; used by tests and embedders).
    Discard,
}

/// The audit log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Opening (or creating) the file failed.
    #[error("cannot open audit log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the audit writer: {0}")]
    Thread(std::io::Error),
}

enum Msg {
    Line(String),
    /// Nothing to write; makes the writer look at the reopen flag now.
    Wake,
    /// Write everything queued before this, flush, then answer.
    Flush(Sender<()>),
}

/// When events arrive faster than this apart, the writer waits this long before writing the
/// next batch: under load it wakes a few hundred times a second instead of once per request
/// (each wake is a futex call and a context switch on the cores the data path needs). A lone
/// event is still written at once.
const BUSY_LINGER: Duration = Duration::from_millis(2);

/// The data path's end of the audit log: non-blocking, bounded, shared by every connection.
pub struct AuditSink {
    tx: Queue,
    dropped: AtomicU64,
    reopen: Arc<AtomicBool>,
    live: tokio::sync::broadcast::Sender<Arc<str>>,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink")
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

fn open(output: &AuditOutput) -> Result<Box<dyn Write + Send>, AuditError> {
    match output {
        AuditOutput::Stdout => Ok(Box::new(std::io::stdout())),
        AuditOutput::Discard => Ok(Box::new(std::io::sink())),
        AuditOutput::File(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
                .map(|f| Box::new(f) as Box<dyn Write + Send>)
                .map_err(|source| AuditError::Open {
                    path: path.clone(),
                    source,
                })
        }
    }
}

impl AuditSink {
    /// Open `output` (so a bad path fails at start, not at the first request) and start the
    /// writer thread.
    pub fn start(output: AuditOutput) -> Result<Arc<AuditSink>, AuditError> {
        let out = open(&output)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let tx = Queue {
            tx,
            queued: queued.clone(),
        };
        let reopen = Arc::new(AtomicBool::new(false));
        let live = tokio::sync::broadcast::channel(LIVE_CAPACITY).0;
        let (flag, feed) = (reopen.clone(), live.clone());
        std::thread::Builder::new()
            .name("egret-audit".into())
            .spawn(move || writer(rx, queued, output, out, flag, feed))
            .map_err(AuditError::Thread)?;
        Ok(Arc::new(AuditSink {
            tx,
            dropped: AtomicU64::new(0),
            reopen,
            live,
        }))
    }

    /// Queue one line (without its newline). Never blocks: when the writer is behind, the
    /// event is dropped and counted.
    pub fn emit(&self, line: String) {
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(_) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Logged at powers of two so a stuck writer cannot flood stderr either.
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "audit writer is behind; events dropped");
                }
            }
        }
    }

    /// Reopen the file at its path before the next write (after log rotation; SIGHUP).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
        let _ = self.tx.try_send(Msg::Wake);
    }

    /// Write out every event queued so far (waits up to `timeout`); call before exiting.
    pub fn flush(&self, timeout: Duration) {
        let (ack, done) = std::sync::mpsc::channel();
        if self.tx.try_send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(timeout);
        }
    }

    /// Follow the events as they are written (the admin socket's `GET /v1/audit`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.live.subscribe()
    }

    /// Events dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The writer thread: batches whatever is queued, writes it, flushes once per batch.
fn writer(
    rx: Receiver<Msg>,
    queued: Arc<AtomicUsize>,
    output: AuditOutput,
    out: Box<dyn Write + Send>,
    reopen: Arc<AtomicBool>,
    live: tokio::sync::broadcast::Sender<Arc<str>>,
) {
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut failing = false;
    let mut last_batch: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        if last_batch.is_some_and(|t| t.elapsed() < BUSY_LINGER) && !matches!(first, Msg::Flush(_))
        {
            std::thread::sleep(BUSY_LINGER);
        }
        if reopen.swap(false, Ordering::Relaxed) {
            let _ = w.flush();
            match open(&output) {
                Ok(f) => {
                    w = std::io::BufWriter::with_capacity(64 * 1024, f);
                    tracing::info!("audit log reopened");
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit log could not be reopened; still writing to the old file")
                }
            }
        }
        let mut next = Some(first);
        let mut flushed = Vec::new();
        while let Some(msg) = next {
            queued.fetch_sub(1, Ordering::Relaxed);
            if let Msg::Flush(ack) = msg {
                flushed.push(ack);
                break;
            }
            if let Msg::Line(line) = msg {
                let result = w
                    .write_all(line.as_bytes())
                    .and_then(|()| w.write_all(b"\n"));
                if let Err(e) = result {
                    if !failing {
                        tracing::error!(error = %e, "cannot write the audit log");
                    }
                    failing = true;
                } else {
                    failing = false;
                }
                if live.receiver_count() > 0 {
                    let _ = live.send(Arc::from(line));
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = w.flush();
        for ack in flushed {
            let _ = ack.send(());
        }
        last_batch = Some(Instant::now());
    }
    let _ = w.flush();
}

/// One audit event (the JSON contract; every field is always present, `null` when it does not
/// apply).
#[derive(Serialize)]
struct Event<'a> {
    ts: String,
    sandbox: &'a str,
    generation: u64,
    conn: Option<u64>,
    client: Option<SocketAddr>,
    host: Option<&'a str>,
    dst: Option<SocketAddr>,
    proto: &'a str,
    method: Option<&'a str>,
    path: Option<Cow<'a, str>>,
    rule: Option<&'a str>,
    handler: Option<&'a str>,
    module_sha256: Option<&'a str>,
    decision: &'a str,
    status: Option<u16>,
    req_bytes: u64,
    resp_bytes: u64,
    ttfb_ms: Option<f64>,
    total_ms: f64,
    error: Option<&'a str>,
    classified: &'a str,
    first_byte_ms: Option<f64>,
    masked: Option<u64>,
    instance_wait_ms: Option<f64>,
    handler_fields: Option<Fields<'a>>,
    decided_by: &'a str,
    /// The shadow candidate's decision, when it differs from the live policy's.
    shadow: Option<ShadowField<'a>>,
}

/// What a shadow candidate would have done with a request (`egret ctl policy shadow`).
#[derive(Serialize)]
struct ShadowField<'a> {
    /// `allow`, `deny`, `would_deny` or `passthrough`.
    decision: &'a str,
    rule: &'a str,
    handler: Option<&'a str>,
    /// The status it would deny with.
    status: Option<u16>,
}

impl<'a> ShadowField<'a> {
    fn of(d: &'a egret_policy::DryRun) -> ShadowField<'a> {
        ShadowField {
            decision: d.decision.as_str(),
            rule: &d.rule,
            handler: d.handler.as_deref(),
            status: d.status,
        }
    }
}

/// A handler's audit fields, written as one JSON object (`{"mcp.tool": "echo", ...}`).
struct Fields<'a>(&'a [(String, String)]);

impl Serialize for Fields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn emit(sink: &AuditSink, ev: &Event<'_>) {
    match serde_json::to_string(ev) {
        Ok(line) => {
            tracing::debug!(target: "egret::audit", decision = ev.decision, event = %line, "audit");
            sink.emit(line);
        }
        Err(e) => tracing::error!(error = %e, "audit event could not be serialised"),
    }
}

/// The `proto` of an HTTP request.
pub(crate) fn http_proto(tls: bool, version: Version) -> &'static str {
    match (tls, version == Version::HTTP_2) {
        (false, false) => "http1",
        (false, true) => "h2",
        (true, false) => "https-h1",
        (true, true) => "https-h2",
    }
}

/// Request body bytes read so far, shared between the request body and its audit record.
#[derive(Clone, Default)]
pub(crate) struct ReqBytes(Arc<AtomicU64>);

/// Box `body` for the upstream, counting its bytes into the request's [`ReqBytes`].
pub(crate) fn counted<B>(body: B, counter: &ReqBytes) -> ProxyBody
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    crate::body::boxed(Counting {
        inner: body,
        count: counter.0.clone(),
    })
}

/// Counts data bytes as they stream through; buffers nothing.
struct Counting<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counting<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                this.count.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Everything an HTTP request's event needs, kept until its response body ends.
struct RequestRecord {
    sink: Arc<AuditSink>,
    metrics: Arc<Metrics>,
    sandbox: Arc<str>,
    started_at: SystemTime,
    start: Instant,
    generation: u64,
    conn: u64,
    client: SocketAddr,
    dst: Option<SocketAddr>,
    host: Option<String>,
    proto: &'static str,
    method: Method,
    path: String,
    outcome: Outcome,
    module_sha256: Option<Arc<str>>,
    status: u16,
    req_bytes: ReqBytes,
    ttfb: Duration,
    classified: crate::conn::Classified,
    first_byte: Option<Duration>,
}

impl RequestRecord {
    /// The handler's fields: as its stream phase left them, when it had one that ended.
    fn handler_fields(&self) -> &[(String, String)] {
        match self.outcome.stream_fields.as_ref().and_then(|f| f.get()) {
            Some(late) => late,
            None => &self.outcome.handler_fields,
        }
    }

    fn finish(self, resp_bytes: u64, body_error: Option<String>) {
        let req_bytes = self.req_bytes.0.load(Ordering::Relaxed);
        self.metrics.request(
            self.outcome.decision,
            Some(self.status),
            req_bytes,
            resp_bytes,
        );
        let error = self.outcome.error.clone().or(body_error);
        let ev = Event {
            ts: rfc3339(self.started_at),
            sandbox: &self.sandbox,
            generation: self.generation,
            conn: Some(self.conn),
            client: Some(self.client),
            host: self.host.as_deref(),
            dst: self.dst,
            proto: self.proto,
            method: Some(self.method.as_str()),
            path: Some(mask_query(&self.path)),
            rule: Some(&self.outcome.rule)
                .filter(|r| &***r != "-")
                .map(|r| &**r),
            handler: self.outcome.handler.as_deref(),
            module_sha256: self.module_sha256.as_deref(),
            decision: self.outcome.decision.as_str(),
            status: Some(self.status),
            req_bytes,
            resp_bytes,
            ttfb_ms: Some(millis(self.ttfb)),
            total_ms: millis(self.start.elapsed()),
            error: error.as_deref(),
            classified: self.classified.as_str(),
            first_byte_ms: self.first_byte.map(millis),
            masked: self
                .outcome
                .masked
                .as_ref()
                .map(|m| m.load(Ordering::Relaxed)),
            instance_wait_ms: self.outcome.instance_wait.map(millis),
            decided_by: self.outcome.decided_by.as_str(),
            handler_fields: Some(self.handler_fields())
                .filter(|f| !f.is_empty())
                .map(Fields),
            shadow: self.outcome.shadow.as_ref().map(ShadowField::of),
        };
        emit(&self.sink, &ev);
    }
}

/// The response body handed to the sandbox: counts bytes and writes the request's audit event
/// when it ends or is dropped (client gone), so sizes and `total_ms` are final.
struct Audited {
    inner: ProxyBody,
    record: Option<RequestRecord>,
    bytes: u64,
    error: Option<String>,
}

impl Body for Audited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.error = Some(format!("response body: {e}"));
            }
            Poll::Ready(None) => {
                if let Some(rec) = this.record.take() {
                    rec.finish(this.bytes, this.error.take());
                }
            }
            Poll::Pending => {}
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        if let Some(rec) = self.record.take() {
            let error = self.error.take().or_else(|| {
                (!self.inner.is_end_stream())
                    .then(|| "response body not finished: the client went away".to_string())
            });
            rec.finish(self.bytes, error);
        }
    }
}

/// Everything [`request`] needs about one HTTP request besides its response.
pub(crate) struct RequestStart<'a> {
    pub info: &'a ConnInfo,
    pub policy: &'a CompiledPolicy,
    pub method: Method,
    pub path: String,
    pub proto: &'static str,
    pub start: Instant,
    pub started_at: SystemTime,
    pub req_bytes: ReqBytes,
}

/// The response head is ready: attach the request's audit record to the response body.
pub(crate) fn request(
    proxy: &Proxy,
    start: RequestStart<'_>,
    target: Option<Target>,
    outcome: Outcome,
    resp: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let generation = start.policy.generation();
    let module_sha256 = match (&outcome.handler, &proxy.handlers) {
        (Some(h), Some(d)) => d.module_sha256(h, generation),
        _ => None,
    };
    let record = RequestRecord {
        sink: proxy.audit.clone(),
        metrics: proxy.metrics.clone(),
        sandbox: proxy.cfg.sandbox_id.clone(),
        started_at: start.started_at,
        start: start.start,
        generation,
        conn: start.info.id,
        client: start.info.client,
        dst: start.info.dst(),
        host: target.map(|t| t.host),
        proto: start.proto,
        method: start.method,
        path: start.path,
        outcome,
        module_sha256,
        status: resp.status().as_u16(),
        req_bytes: start.req_bytes,
        ttfb: start.start.elapsed(),
        classified: start.info.classified,
        first_byte: start.info.first_byte,
    };
    resp.map(|inner| {
        crate::body::boxed(Audited {
            inner,
            record: Some(record),
            bytes: 0,
            error: None,
        })
    })
}

/// How an opaque TCP / TLS connection ended (or was refused before it was carried).
pub(crate) struct ConnEnd<'a> {
    pub decision: Decision,
    /// The rule for `forward`, `deny` and `revoked`; the reason for `error`.
    pub detail: &'a str,
    /// Bytes carried from the client upstream.
    pub bytes_up: u64,
    /// Bytes carried from the upstream to the client.
    pub bytes_down: u64,
}

impl<'a> ConnEnd<'a> {
    /// Refused or failed before a byte was carried.
    pub(crate) fn unopened(decision: Decision, detail: &'a str) -> ConnEnd<'a> {
        ConnEnd {
            decision,
            detail,
            bytes_up: 0,
            bytes_down: 0,
        }
    }
}

/// One opaque TCP / TLS connection (to `name`, when it has one) ended or was refused.
pub(crate) fn connection(
    proxy: &Proxy,
    info: &ConnInfo,
    name: Option<&str>,
    proto: TunnelProto,
    end: ConnEnd<'_>,
) {
    let ConnEnd {
        decision,
        detail,
        bytes_up,
        bytes_down,
    } = end;
    proxy.metrics.tunnel(proto, decision, bytes_up, bytes_down);
    let elapsed = info.started.elapsed();
    let (rule, error) = if decision == Decision::Error {
        (None, Some(detail))
    } else {
        (Some(detail), None)
    };
    let ev = Event {
        ts: rfc3339(SystemTime::now() - elapsed),
        sandbox: &proxy.cfg.sandbox_id,
        generation: proxy.policy.load().generation(),
        conn: Some(info.id),
        client: Some(info.client),
        host: name,
        dst: info.dst(),
        proto: proto.as_str(),
        method: None,
        path: None,
        rule,
        handler: None,
        module_sha256: None,
        decision: decision.as_str(),
        status: None,
        req_bytes: bytes_up,
        resp_bytes: bytes_down,
        ttfb_ms: None,
        total_ms: millis(elapsed),
        error,
        classified: info.classified.as_str(),
        first_byte_ms: info.first_byte.map(millis),
        masked: None,
        instance_wait_ms: None,
        handler_fields: None,
        decided_by: info
            .asked
            .map_or(crate::ask::DecidedBy::Policy, |a| a.by)
            .as_str(),
        shadow: None,
    };
    emit(&proxy.audit, &ev);
}

/// One `fetch` a handler made, for its audit event.
pub(crate) struct FetchRecord<'a> {
    pub sandbox: &'a str,
    pub generation: u64,
    pub handler: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    pub decision: Decision,
    pub status: Option<u16>,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    pub started_at: SystemTime,
    pub start: Instant,
    pub error: Option<&'a str>,
}

/// A handler's `fetch` ended: one event with proto `handler-fetch` (no sandbox connection:
/// `conn`, `client` and `dst` are null; `host` is the host fetched).
pub(crate) fn fetch(sink: &AuditSink, metrics: &Metrics, r: &FetchRecord<'_>) {
    metrics.fetch(r.decision);
    let host = if r.port == 443 || r.port == 80 {
        Cow::Borrowed(r.host)
    } else {
        Cow::Owned(format!("{}:{}", r.host, r.port))
    };
    let ev = Event {
        ts: rfc3339(r.started_at),
        sandbox: r.sandbox,
        generation: r.generation,
        conn: None,
        client: None,
        host: Some(&host),
        dst: None,
        proto: "handler-fetch",
        method: Some(r.method),
        path: Some(mask_query(r.path)),
        rule: None,
        handler: Some(r.handler),
        module_sha256: None,
        decision: r.decision.as_str(),
        status: r.status,
        req_bytes: r.req_bytes,
        resp_bytes: r.resp_bytes,
        ttfb_ms: None,
        total_ms: millis(r.start.elapsed()),
        error: r.error,
        classified: "fetch",
        first_byte_ms: None,
        masked: None,
        instance_wait_ms: None,
        handler_fields: None,
        decided_by: crate::ask::DecidedBy::Policy.as_str(),
        shadow: None,
    };
    emit(sink, &ev);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_masked() {
        assert_eq!(mask_query("/a?token=x"), "/a?[masked]");
        assert_eq!(mask_query("/a"), "/a");
    }

    #[test]
    fn the_queue_is_bounded_and_gives_its_place_back_when_refusing() {
        let (tx, rx) = std::sync::mpsc::channel();
        let q = Queue {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
        };
        for i in 0..CHANNEL_CAPACITY {
            assert!(q.try_send(Msg::Line(i.to_string())).is_ok(), "event {i}");
        }
        assert!(q.try_send(Msg::Line("one too many".into())).is_err());
        assert_eq!(q.queued.load(Ordering::Relaxed), CHANNEL_CAPACITY);
        // The writer takes one out (and counts it off): there is room for one more.
        assert!(rx.try_recv().is_ok());
        q.queued.fetch_sub(1, Ordering::Relaxed);
        assert!(q.try_send(Msg::Line("fits again".into())).is_ok());
        // A writer that is gone refuses everything and leaks no count.
        drop(rx);
        assert!(q.try_send(Msg::Wake).is_err());
        assert_eq!(q.queued.load(Ordering::Relaxed), CHANNEL_CAPACITY);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn file_sink_writes_lines_and_reopens_after_rotation() {
        let dir = std::env::temp_dir().join(format!("egret-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let sink = AuditSink::start(AuditOutput::File(path.clone())).unwrap();
        let mut live = sink.subscribe();
        sink.emit("{\"n\":1}".into());
        let wait = |p: &std::path::Path, want: &str| {
            for _ in 0..200 {
                if std::fs::read_to_string(p).unwrap_or_default() == want {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("{} never became {want:?}", p.display());
        };
        wait(&path, "{\"n\":1}\n");
        assert_eq!(&*live.try_recv().unwrap(), "{\"n\":1}");
        std::fs::rename(&path, dir.join("audit.log.1")).unwrap();
        sink.reopen();
        sink.emit("{\"n\":2}".into());
        wait(&path, "{\"n\":2}\n");
        wait(&dir.join("audit.log.1"), "{\"n\":1}\n");
        assert_eq!(sink.dropped(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
