//! `egret handler build|check|run`: let handler authors build, validate and try a module
//! without a sandbox.
use crate::cli::{HandlerBuildArgs, HandlerCheckArgs, HandlerRunArgs, ResponseModeArg};
use anyhow::{bail, Context, Result};
use std::process::ExitCode;
use std::sync::Arc;

fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read module {}", path.display()))
}

fn host() -> Result<egret_wasm::HandlerHost> {
    cached_host(None)
}

fn cached_host(cache_dir: Option<std::path::PathBuf>) -> Result<egret_wasm::HandlerHost> {
    let cfg = egret_wasm::HostConfig {
        max_instances: 4,
        cache_dir,
        ..egret_wasm::HostConfig::default()
    };
    Ok(egret_wasm::HandlerHost::new(cfg)?)
}

pub(crate) fn build(args: HandlerBuildArgs) -> Result<ExitCode> {
    use egret_wasm::toolchain;
    let language = toolchain::Language::of(&args.file)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.file.with_extension("wasm"));
    let mut tc = toolchain::Toolchain::from_env();
    if let Some(dir) = args.toolchain_dir {
        tc.js_prefix = dir;
    }
    eprintln!(
        "building {} ({}; this takes about half a minute)",
        args.file.display(),
        language.name()
    );
    let started = std::time::Instant::now();
    let built = toolchain::build(&args.file, &tc)?;
    // What the toolchain made must be a handler egret loads: a wrong world or a stray import
    // is reported here, not when a policy loads it.
    let info = cached_host(args.handler_cache_dir)?
        .check(&built.component)
        .with_context(|| {
            format!(
                "the component built from {} is not a valid egret handler",
                args.file.display()
            )
        })?;
    egret_fs::write_atomic(&out, &built.component, 0o644, false)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "{}: built from {} in {:.1} s",
        out.display(),
        args.file.display(),
        started.elapsed().as_secs_f64()
    );
    println!("  world    {}", info.wit_version.world());
    println!("  sha256   {}", info.sha256_hex);
    println!("  size     {} bytes", info.size_bytes);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn check(args: HandlerCheckArgs) -> Result<ExitCode> {
    let bytes = read(&args.module)?;
    let info = cached_host(args.handler_cache_dir)?
        .check(&bytes)
        .with_context(|| format!("{} is not a valid egret handler", args.module.display()))?;
    println!("{}: ok", args.module.display());
    println!("  world    {}", info.wit_version.world());
    println!("  sha256   {}", info.sha256_hex);
    println!("  size     {} bytes", info.size_bytes);
    println!("  exports  {}", info.exports.join(", "));
    println!("  imports  {}", info.imports.join(", "));
    Ok(ExitCode::SUCCESS)
}

fn split_pair(item: &str, sep: char, what: &str) -> Result<(String, String)> {
    match item.split_once(sep) {
        Some((k, v)) if !k.trim().is_empty() => {
            Ok((k.trim().to_string(), v.trim_start().to_string()))
        }
        _ => bail!("invalid {what} {item:?}: expected NAME{sep}VALUE"),
    }
}

fn read_opt(text: Option<String>, file: Option<&std::path::Path>) -> Result<Option<Vec<u8>>> {
    match (text, file) {
        (Some(t), _) => Ok(Some(t.into_bytes())),
        (None, Some(p)) => Ok(Some(
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        )),
        (None, None) => Ok(None),
    }
}

pub(crate) fn run(args: HandlerRunArgs) -> Result<ExitCode> {
    let bytes = read(&args.module)?;
    let headers = args
        .headers
        .iter()
        .map(|h| split_pair(h, ':', "--header"))
        .collect::<Result<Vec<_>>>()?;
    let secrets = args
        .secrets
        .iter()
        .map(|s| split_pair(s, '=', "--secret"))
        .collect::<Result<Vec<_>>>()?;
    serde_json::from_str::<serde_json::Value>(&args.params)
        .with_context(|| format!("--params is not JSON: {}", args.params))?;
    let body = read_opt(args.body.clone(), args.body_file.as_deref())?;
    let response = offline_response(&args)?;
    let streams = response.as_ref().is_some_and(|r| r.pieces.is_some());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(async {
        let host = host()?;
        let (services, fetch_log) = fetch_services(&args)?;
        let run = egret_wasm::OfflineRun {
            request_line: &args.request,
            headers: &headers,
            body,
            params_json: &args.params,
            secrets,
            mint: args.mint_secrets.clone(),
            services: egret_wasm::Services {
                response_streams: streams,
                ..services
            },
            sandbox_id: &args.sandbox_id,
            response,
        };
        let mut out = egret_wasm::run_offline_with(&host, &bytes, run).await?;
        if let Some(log) = fetch_log {
            log.describe(&mut out);
        }
        anyhow::Ok(out)
    })?;
    print!("{out}");
    if !out.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// The response of `--response STATUS` and its headers and body, if given.
fn offline_response(args: &HandlerRunArgs) -> Result<Option<egret_wasm::OfflineResponse>> {
    let Some(status) = args.response else {
        return Ok(None);
    };
    let headers = args
        .response_headers
        .iter()
        .map(|h| split_pair(h, ':', "--response-header"))
        .collect::<Result<Vec<_>>>()?;
    let body = read_opt(
        args.response_body.clone(),
        args.response_body_file.as_deref(),
    )?;
    let mode = args.response_mode.unwrap_or(if body.is_some() {
        ResponseModeArg::Buffer
    } else {
        ResponseModeArg::Head
    });
    let body = body.unwrap_or_default();
    let pieces = (mode == ResponseModeArg::Stream)
        .then(|| stream_pieces(&headers, &body))
        .transpose()?;
    Ok(Some(egret_wasm::OfflineResponse {
        status,
        headers,
        body,
        buffer: mode == ResponseModeArg::Buffer,
        observe: mode == ResponseModeArg::Observe,
        pieces,
    }))
}

/// `fetch` for the guest when `--fetch-host` grants some hosts, with the audit feed its
/// calls are logged on.
fn fetch_services(args: &HandlerRunArgs) -> Result<(egret_wasm::Services, Option<FetchLog>)> {
    if args.fetch_hosts.is_empty() {
        return Ok((egret_wasm::Services::default(), None));
    }
    let limits = egret_policy::FetchConfig {
        timeout_ms: args.fetch_timeout_ms,
        ..egret_policy::FetchConfig::default()
    };
    let (fetcher, audit) =
        egret_app::glue::offline_fetcher(&args.fetch_hosts, limits, &args.upstream_ca)?;
    let feed = audit.subscribe();
    let services = egret_wasm::Services {
        fetch: Some(fetcher),
        max_fetches: limits.max_calls,
        fetch_timeout: std::time::Duration::from_millis(limits.timeout_ms),
        mint: None,
        response_streams: false,
    };
    Ok((services, Some(FetchLog { audit, feed })))
}

/// The audit events of the guest's `fetch` calls.
struct FetchLog {
    audit: Arc<egret_proxy::AuditSink>,
    feed: tokio::sync::broadcast::Receiver<Arc<str>>,
}

impl FetchLog {
    /// One line per call: method, URL, decision, status, size, error.
    fn describe(mut self, out: &mut String) {
        self.audit.flush(std::time::Duration::from_secs(1));
        while let Ok(line) = self.feed.try_recv() {
            let ev: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            out.push_str(&format!(
                "fetch {} {}{} -> {} {} ({} bytes){}\n",
                ev["method"].as_str().unwrap_or("?"),
                ev["host"].as_str().unwrap_or("?"),
                ev["path"].as_str().unwrap_or(""),
                ev["decision"].as_str().unwrap_or("?"),
                ev["status"]
                    .as_u64()
                    .map_or("-".to_string(), |s| s.to_string()),
                ev["resp_bytes"].as_u64().unwrap_or(0),
                ev["error"]
                    .as_str()
                    .map_or(String::new(), |e| format!(": {e}")),
            ));
        }
    }
}

/// The response body cut as the proxy's stream mode cuts it: whole server-sent events of a
/// `text/event-stream` body (bounded like the policy's default `max_event_bytes`), else the
/// body in one piece.
fn stream_pieces(headers: &[(String, String)], body: &[u8]) -> Result<Vec<Vec<u8>>> {
    let sse = egret_proxy::sse::is_event_stream(
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_bytes()),
    );
    if !sse {
        return Ok(vec![body.to_vec()]);
    }
    let max = usize::try_from(egret_policy::config::DEFAULT_EVENT_BYTES).unwrap_or(usize::MAX);
    let mut splitter = egret_proxy::sse::SseSplitter::new(max);
    let mut out = Vec::new();
    splitter
        .push(body, &mut out)
        .context("--response-body as an event stream")?;
    let mut pieces: Vec<Vec<u8>> = out.into_iter().map(|b| b.to_vec()).collect();
    pieces.extend(splitter.finish().map(|b| b.to_vec()));
    Ok(pieces)
}
