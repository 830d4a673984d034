//! HTTP requests handlers make themselves (`fetch` in the handler WIT): a token exchange, a
//! lookup in a store. They go through egret's own upstream client, so they get what every
//! upstream connection gets — the name resolved by egret, every address checked against the
//! non-public ranges, certificates verified — plus the binding's host grant, a response size
//! bound and a deadline. Each call is an audit event of its own and is counted in the metrics.
use crate::body::{full, ProxyBody};
use crate::metrics::{Decision, Metrics};
use crate::upstream::{Clients, ConnectError, Resolver};
use crate::AuditSink;
use arc_swap::ArcSwap;
use bytes::Bytes;
use egret_policy::{CompiledPolicy, FetchGrant};
use http::{HeaderMap, Method, Request, Uri};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// One fetch to send.
#[derive(Debug)]
pub struct FetchRequest {
    /// The handler that asks (audit, errors).
    pub handler: Arc<str>,
    /// Method.
    pub method: Method,
    /// Absolute `http(s)://` URL.
    pub url: Uri,
    /// Headers (secret values marked sensitive).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// What came back.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body (at most the grant's `max_response_bytes`).
    pub body: Bytes,
}

/// Sends handlers' fetches for one sandbox.
pub struct FetchClient {
    clients: Clients,
    audit: Arc<AuditSink>,
    metrics: Arc<Metrics>,
    sandbox: Arc<str>,
    policy: Arc<ArcSwap<CompiledPolicy>>,
}

impl FetchClient {
    /// A client over its own upstream pools, checking addresses against `policy` (and the
    /// sandbox's synthetic addresses) like the data path does.
    pub fn new(
        sandbox: &str,
        policy: Arc<ArcSwap<CompiledPolicy>>,
        synthetic: Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>,
        tls: Option<Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
        audit: Arc<AuditSink>,
        metrics: Arc<Metrics>,
    ) -> FetchClient {
        let resolver = Resolver::new(policy.clone(), synthetic);
        FetchClient {
            clients: Clients::new(resolver, tls.clone(), tls, connect_timeout, metrics.clone()),
            audit,
            metrics,
            sandbox: Arc::from(sandbox),
            policy,
        }
    }

    /// Send `req` if `grant` allows its host. The error is shown to the guest: it names the
    /// host and the reason, never a header value or body.
    pub async fn fetch(
        &self,
        grant: &FetchGrant,
        req: FetchRequest,
    ) -> Result<FetchResponse, String> {
        let start = Instant::now();
        let started_at = SystemTime::now();
        let https = req.url.scheme_str() == Some("https");
        let host = req.url.host().unwrap_or("").to_owned();
        let port = req.url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = req
            .url
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let req_bytes = req.body.len() as u64;
        let handler = req.handler.clone();
        let method = req.method.clone();
        let mut record = crate::audit::FetchRecord {
            sandbox: &self.sandbox,
            generation: self.policy.load().generation(),
            handler: &handler,
            method: method.as_str(),
            host: &host,
            port,
            path: &path,
            decision: Decision::Error,
            status: None,
            req_bytes,
            resp_bytes: 0,
            started_at,
            start,
            error: None,
        };
        if !grant.allows(&host, port) {
            let why = format!(
                "fetch to {host}:{port} is not granted to handler {} (fetch_hosts: {})",
                handler,
                grant.patterns().join(", ")
            );
            record.decision = Decision::Deny;
            record.error = Some(&why);
            crate::audit::fetch(&self.audit, &self.metrics, &record);
            return Err(why);
        }
        let result = tokio::time::timeout(grant.timeout, self.send(req, grant.max_response_bytes))
            .await
            .unwrap_or_else(|_| {
                Err((
                    Decision::Error,
                    format!("fetch to {host}:{port} timed out after {:?}", grant.timeout),
                ))
            });
        match result {
            Ok(resp) => {
                record.decision = Decision::Forward;
                record.status = Some(resp.status);
                record.resp_bytes = resp.body.len() as u64;
                crate::audit::fetch(&self.audit, &self.metrics, &record);
                Ok(resp)
            }
            Err((decision, why)) => {
                record.decision = decision;
                record.error = Some(&why);
                crate::audit::fetch(&self.audit, &self.metrics, &record);
                Err(why)
            }
        }
    }

    async fn send(
        &self,
        req: FetchRequest,
        max_bytes: u64,
    ) -> Result<FetchResponse, (Decision, String)> {
        use http_body_util::BodyExt;
        let host = req.url.host().unwrap_or("").to_owned();
        let mut r = Request::builder()
            .method(req.method)
            .uri(req.url)
            .body::<ProxyBody>(full(req.body))
            .map_err(|e| (Decision::Error, format!("fetch: {e}")))?;
        *r.headers_mut() = req.headers;
        let resp = self.clients.auto.request(r).await.map_err(|e| {
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = src {
                if let Some(c) = s.downcast_ref::<ConnectError>() {
                    let d = if c.is_refusal() {
                        Decision::Deny
                    } else {
                        Decision::Error
                    };
                    return (d, format!("fetch: {c}"));
                }
                src = s.source();
            }
            (Decision::Error, format!("fetch to {host} failed: {e}"))
        })?;
        let (parts, body) = resp.into_parts();
        let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let body = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    (
                        Decision::Error,
                        format!("fetch from {host}: the response body is larger than {max_bytes} bytes (fetch.max_response_bytes)"),
                    )
                } else {
                    (Decision::Error, format!("fetch from {host}: reading the response failed: {e}"))
                }
            })?
            .to_bytes();
        Ok(FetchResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}
