//! `egret handler check|run`: let handler authors validate and try a module without a sandbox.
use crate::cli::{HandlerCheckArgs, HandlerRunArgs};
use anyhow::{bail, Context, Result};
use std::process::ExitCode;

fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read module {}", path.display()))
}

fn host() -> Result<egret_wasm::HandlerHost> {
    let cfg = egret_wasm::HostConfig {
        max_instances: 4,
        ..egret_wasm::HostConfig::default()
    };
    Ok(egret_wasm::HandlerHost::new(cfg)?)
}

pub fn check(args: HandlerCheckArgs) -> Result<ExitCode> {
    let bytes = read(&args.module)?;
    let info = host()?
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

pub fn run(args: HandlerRunArgs) -> Result<ExitCode> {
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(async {
        let host = host()?;
        let out = egret_wasm::run_offline(
            &host,
            &bytes,
            &args.request,
            &headers,
            &args.params,
            secrets,
            &args.sandbox_id,
        )
        .await?;
        anyhow::Ok(out)
    })?;
    print!("{out}");
    if !out.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
