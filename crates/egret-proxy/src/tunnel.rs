//! Opaque TCP and TLS pass-through: allowed or refused by destination, then spliced both ways
//! with whatever bytes were read while classifying replayed first.
use crate::audit::ConnEnd;
use crate::conn::{reset, ConnInfo};
use crate::metrics::{Decision, TunnelProto};
use crate::upstream::ConnectError;
use crate::Proxy;
use bytes::Bytes;
use egret_policy::{Verdict, VerdictAction};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Bytes read from one side before a splice began, still owed to the other.
#[derive(Default)]
pub(crate) struct Owed {
    /// Read from the client while classifying: sent upstream first.
    pub to_up: Bytes,
    /// A server's greeting read while waiting for the client: sent to the client first.
    pub to_down: Bytes,
}

impl Proxy {
    /// Opaque TCP: the policy decides by the name the sandbox looked up (or the IP).
    pub(crate) async fn tunnel(
        self: Arc<Self>,
        stream: TcpStream,
        prefix: Bytes,
        mut info: ConnInfo,
        proto: TunnelProto,
    ) {
        let policy = self.policy.load_full();
        let name = info.dns_name.clone();
        let dest = crate::conn::conn_destination(name.as_deref(), info.orig);
        let verdict = policy.evaluate(&dest);
        let carried = match verdict.action {
            VerdictAction::Allow => carried(&verdict),
            VerdictAction::Deny => {
                if policy.is_undecided(&verdict.rule) && !info.asked.is_some_and(|a| a.allow) {
                    let host = name
                        .as_deref()
                        .map_or_else(|| info.orig.ip().to_string(), str::to_string);
                    info.asked = self.ask(&host, info.orig.port(), None).await;
                }
                if !info.asked.is_some_and(|a| a.allow) {
                    self.refuse(stream, &info, name.as_deref(), proto, &verdict.rule);
                    return;
                }
                (Decision::Forward, verdict.rule.clone())
            }
            VerdictAction::Handler(id) => {
                // A handler decides per HTTP request; a connection that is not HTTP cannot be
                // shown to it, so it is refused rather than let through unexamined.
                let why = format!(
                    "{} routes to handler {}, which needs HTTP; this connection is not HTTP",
                    verdict.rule,
                    policy.binding(id).handler
                );
                self.refuse(stream, &info, name.as_deref(), proto, &why);
                return;
            }
            VerdictAction::Rules(_) => {
                // Request rules decide by method and path, which only HTTP has.
                let why = format!(
                    "{} decide HTTP requests by method and path; this connection is not HTTP",
                    verdict.rule
                );
                self.refuse(stream, &info, name.as_deref(), proto, &why);
                return;
            }
        };
        self.splice_to(stream, prefix, info, proto, (carried.0, &carried.1))
            .await
    }

    /// TLS pass-through: spliced untouched to the SNI name (resolved by egret).
    pub(crate) async fn passthrough(
        self: Arc<Self>,
        stream: TcpStream,
        prefix: Bytes,
        info: ConnInfo,
        would_deny: Option<Arc<str>>,
    ) {
        let (decision, rule) = match would_deny {
            Some(r) => (Decision::WouldDeny, r),
            None => (Decision::Forward, Arc::from("passthrough_hosts")),
        };
        self.splice_to(
            stream,
            prefix,
            info,
            TunnelProto::TlsPassthrough,
            (decision, &rule),
        )
        .await
    }

    /// Connect to where an opaque connection goes: the name (SNI, else the name the sandbox
    /// looked up) resolved by egret, else the dialled address — each checked like every
    /// upstream address (see [`crate::upstream::Resolver`]).
    pub(crate) async fn connect_opaque(&self, info: &ConnInfo) -> Result<TcpStream, ConnectError> {
        let port = info.orig.port();
        match info.sni.as_deref().or(info.dns_name.as_deref()) {
            Some(n) => self.connector.connect_tcp(n, port).await,
            None => {
                self.connector
                    .connect_tcp(&info.orig.ip().to_string(), port)
                    .await
            }
        }
    }

    async fn splice_to(
        self: Arc<Self>,
        stream: TcpStream,
        prefix: Bytes,
        info: ConnInfo,
        proto: TunnelProto,
        carried: (Decision, &str),
    ) {
        let name = info.sni.clone().or(info.dns_name.clone());
        let up = match self.connect_opaque(&info).await {
            Ok(u) => u,
            Err(e) => {
                let decision = if e.is_refusal() {
                    Decision::Deny
                } else {
                    Decision::Error
                };
                let detail = e.to_string();
                let end = ConnEnd::unopened(decision, &detail);
                crate::audit::connection(&self, &info, name.as_deref(), proto, end);
                reset(stream);
                return;
            }
        };
        let owed = Owed {
            to_up: prefix,
            ..Owed::default()
        };
        self.splice(stream, up, owed, info, proto, carried).await
    }

    /// Copy both ways until either side closes (or a policy swap revokes the destination),
    /// after paying what is `owed` to either side.
    pub(crate) async fn splice(
        self: Arc<Self>,
        mut stream: TcpStream,
        mut up: TcpStream,
        owed: Owed,
        info: ConnInfo,
        proto: TunnelProto,
        (decision, rule): (Decision, &str),
    ) {
        let name = info.sni.clone().or(info.dns_name.clone());
        let Owed { to_up, to_down } = owed;
        let mut sent = to_up.len() as u64;
        let mut received = to_down.len() as u64;
        if !to_up.is_empty() && up.write_all(&to_up).await.is_err() {
            reset(stream);
            return;
        }
        if !to_down.is_empty() && stream.write_all(&to_down).await.is_err() {
            return;
        }
        let revoked = self.revoked(
            name.clone(),
            info.orig,
            proto == TunnelProto::TlsPassthrough,
        );
        let counts = crate::splice::Counts::default();
        // Nothing looks at these bytes: the kernel moves them (splice). Without pipes (out of
        // descriptors) they go through a buffer, as any copy would.
        let pipes = crate::splice::Pipes::new();
        let copy = async {
            match &pipes {
                Ok(pipes) => pipes.copy(&stream, &up, &counts).await,
                Err(e) => {
                    tracing::debug!(error = %e, "no pipe for splice; copying through a buffer");
                    let (a, b) = tokio::io::copy_bidirectional(&mut stream, &mut up).await?;
                    counts.add(a, b);
                    Ok(())
                }
            }
        };
        let ended: Result<std::io::Result<()>, String> = tokio::select! {
            copied = copy => Ok(copied),
            why = revoked => Err(why),
        };
        // What went through counts whether the copy ended well, failed or was revoked.
        let (a, b) = counts.get();
        sent += a;
        received += b;
        let end = |decision, detail| ConnEnd {
            decision,
            detail,
            bytes_up: sent,
            bytes_down: received,
        };
        let name = name.as_deref();
        match ended {
            Ok(_) => crate::audit::connection(&self, &info, name, proto, end(decision, rule)),
            Err(why) => {
                let end = end(Decision::Revoked, &why);
                crate::audit::connection(&self, &info, name, proto, end);
                reset(stream);
            }
        }
    }

    /// Resolves when a policy swap denies this destination; returns the denying rule.
    async fn revoked(&self, name: Option<Arc<str>>, orig: SocketAddr, tls: bool) -> String {
        let mut rx = self.generation_tx.subscribe();
        loop {
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            let policy = self.policy.load();
            let dest = crate::conn::conn_destination(name.as_deref(), orig);
            if tls {
                if let egret_policy::TlsDecision::Refuse(v) = policy.tls_decision(&dest) {
                    return v.rule.to_string();
                }
            } else {
                let v = policy.evaluate(&dest);
                if !matches!(v.action, VerdictAction::Allow) {
                    return v.rule.to_string();
                }
            }
        }
    }
}

/// How a connection an allowing verdict lets through is audited: `forward` by the rule that
/// allowed it, or `would_deny` by the rule that would have refused it (report-only).
pub(crate) fn carried(v: &Verdict) -> (Decision, Arc<str>) {
    match &v.would_deny {
        Some(rule) => (Decision::WouldDeny, rule.clone()),
        None => (Decision::Forward, v.rule.clone()),
    }
}
