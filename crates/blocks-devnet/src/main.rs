//! `blocks-devnet`: run a local Blocks Network until Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use blocks_devnet::{ApiKey, Devnet, DevnetConfig};

const USAGE: &str =
    "usage: blocks-devnet [--port N] [--api-key KEY[:USER]]... [--agent NAME:paid|free]... [--token-ttl SECS]
                     [--data-dir DIR | --in-memory] [--max-upload-bytes N] [--allow-host NAME]...
                     [--ack-timeout SECS] [--tls [--tls-ca CERT.pem --tls-ca-key KEY.pem]]
                     [--log error|warn|info|debug]
  --data-dir DIR     where the network keeps its database and files (default .blocks-devnet in the current directory)
  --in-memory        keep nothing: a throwaway network
  --allow-host NAME  also serve requests for this host name (besides localhost, 127.0.0.0/8 and [::1]);
                     .NAME allows NAME and every name under it; others get 421 (DNS rebinding)
  --tls              serve HTTPS: a CA kept in DIR/tls (made on first use) signs a certificate for
                     localhost, 127.0.0.1 and ::1; trust it with the NODE_EXTRA_CA_CERTS export
  --tls-ca CERT.pem, --tls-ca-key KEY.pem
                     sign with this CA instead (PEM certificate and PKCS#8 key)
  --ack-timeout SECS how long an agent instance has to acknowledge a task before it is sent again
                     (default 30); after three unanswered sends it fails with task_not_acknowledged";

fn parse(args: &[String]) -> Result<(DevnetConfig, String), String> {
    let mut cfg = DevnetConfig::default();
    let mut data_dir: Option<std::path::PathBuf> = None;
    let mut in_memory = false;
    let mut keys = Vec::new();
    let mut log = "info".to_string();
    let (mut tls, mut tls_ca, mut tls_key) = (false, None::<String>, None::<String>);
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
            "--ack-timeout" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--ack-timeout needs seconds, got {v:?}"))?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err("--ack-timeout must be positive".into());
                }
                cfg.ack_timeout = Duration::from_secs_f64(secs);
            }
            "--tls" => tls = true,
            "--tls-ca" => tls_ca = Some(value()?),
            "--tls-ca-key" => tls_key = Some(value()?),
            "--data-dir" => data_dir = Some(value()?.into()),
            "--in-memory" => in_memory = true,
            "--max-upload-bytes" => {
                let v = value()?;
                cfg.max_upload_bytes = v
                    .parse()
                    .map_err(|_| format!("--max-upload-bytes needs a whole number of bytes, got {v:?}"))?;
            }
            "--allow-host" => {
                let v = value()?;
                if v.trim().trim_start_matches('.').is_empty() || v.contains(['/', ' ', ':']) {
                    return Err(format!(
                        "--allow-host needs a host name (no port, no scheme), got {v:?}"
                    ));
                }
                cfg.allowed_hosts.push(v);
            }
            "--log" => {
                log = value()?;
                if !matches!(log.as_str(), "error" | "warn" | "info" | "debug") {
                    return Err(format!("--log must be error, warn, info or debug, got {log:?}"));
                }
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    if !keys.is_empty() {
        cfg.api_keys = keys;
    }
    let read = |p: &str, what: &str| std::fs::read_to_string(p).map_err(|e| format!("{what} {p}: {e}"));
    cfg.tls = match (tls, tls_ca, tls_key) {
        (false, None, None) => None,
        (true, None, None) => Some(blocks_devnet::TlsCa::Own),
        (true, Some(c), Some(k)) => Some(blocks_devnet::TlsCa::Given {
            cert_pem: read(&c, "--tls-ca")?,
            key_pem: read(&k, "--tls-ca-key")?,
        }),
        (false, _, _) => return Err("--tls-ca and --tls-ca-key go with --tls".into()),
        (true, _, _) => return Err("--tls-ca and --tls-ca-key go together (the CA certificate and its key)".into()),
    };
    cfg.data_dir = match (in_memory, data_dir) {
        (true, Some(_)) => return Err("--in-memory and --data-dir exclude each other: choose one".into()),
        (true, None) => None,
        (false, Some(d)) => Some(d),
        (false, None) => Some(".blocks-devnet".into()),
    };
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
    let level = match log.as_str() {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let data = match &cfg.data_dir {
        Some(d) => format!("data in {}", d.display()),
        None => "in memory: nothing is kept".to_string(),
    };
    // signal handlers before the network is announced: a Ctrl-C right after start-up must stop it
    // cleanly, not kill the process with the default action
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("blocks-devnet: cannot install the signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
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
    println!("blocks-devnet listening on {} ({data}; Ctrl-C to stop)", net.url());
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    net.stop().await;
    ExitCode::SUCCESS
}
