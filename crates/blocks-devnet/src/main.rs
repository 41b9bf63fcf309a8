//! `blocks-devnet`: run a local Blocks Network until Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use blocks_devnet::{ApiKey, Devnet, DevnetConfig};

const USAGE: &str = "usage: blocks-devnet [--port N] [--api-key KEY[:USER]]... [--agent NAME:paid|free]... [--token-ttl SECS] [--log info|debug]";

fn parse(args: &[String]) -> Result<(DevnetConfig, String), String> {
    let mut cfg = DevnetConfig::default();
    let mut keys = Vec::new();
    let mut log = "info".to_string();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--port" => {
                let v = value()?;
                cfg.port = v
                    .parse()
                    .map_err(|_| format!("--port needs a number 0-65535, got {v:?}"))?;
            }
            "--api-key" => {
                let v = value()?;
                let (key, user) = v
                    .split_once(':')
                    .map(|(k, u)| (k.to_string(), u.to_string()))
                    .unwrap_or((v.clone(), format!("user_{}", keys.len() + 1)));
                if key.is_empty() {
                    return Err("--api-key needs a non-empty key".into());
                }
                keys.push(ApiKey { key, user_id: user });
            }
            "--agent" => {
                let v = value()?;
                match v.split_once(':') {
                    Some((name, "paid")) => cfg.paid_agents.push(name.to_string()),
                    Some((_, "free")) | None => {}
                    Some((name, other)) => {
                        return Err(format!("--agent {name}:{other}: billing mode must be free or paid"))
                    }
                }
            }
            "--token-ttl" => {
                let v = value()?;
                let secs: f64 = v.parse().map_err(|_| format!("--token-ttl needs seconds, got {v:?}"))?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err("--token-ttl must be positive".into());
                }
                cfg.token_ttl = Duration::from_secs_f64(secs);
            }
            "--log" => log = value()?,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if !keys.is_empty() {
        cfg.api_keys = keys;
    }
    Ok((cfg, log))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cfg, log) = match parse(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("blocks-devnet: {e}");
            return ExitCode::from(2);
        }
    };
    if log == "debug" {
        eprintln!("blocks-devnet: request logging is available through the Node CLI (npx blocks-devnet --log debug)");
    }
    let net = match Devnet::start(cfg).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("blocks-devnet: {e}");
            return ExitCode::from(1);
        }
    };
    for (k, v) in net.env() {
        println!("export {k}={v}");
    }
    println!("blocks-devnet listening on {} (Ctrl-C to stop)", net.url());
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("blocks-devnet: cannot install the SIGTERM handler: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    net.stop().await;
    ExitCode::SUCCESS
}
