//! `blocks-devnet`: run a local Blocks Network until Ctrl-C.

use std::process::ExitCode;

use blocks_devnet::{config, Devnet};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", config::USAGE);
        return ExitCode::SUCCESS;
    }
    let (cfg, log) = match config::parse(&args) {
        Ok(config::Serve { config, log }) => (config, log.unwrap_or_else(|| "info".into())),
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
