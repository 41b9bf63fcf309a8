//! The devnet's settings ([`DevnetConfig`]) and the rules of their values, in one place: the
//! command line and its flags, the `blocks-devnet` binary, `npx blocks-devnet` (through the addon)
//! and `LocalNetwork.start` options all go through these functions, so a flag and its option
//! cannot disagree.

use std::time::Duration;

use crate::tls::TlsCa;

/// One user's API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key (`bk_…`).
    pub key: String,
    /// The user it authenticates.
    pub user_id: String,
}

/// Devnet settings.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// Port on 127.0.0.1 (0 = any free port).
    pub port: u16,
    /// Users; the first key is the default one.
    pub api_keys: Vec<ApiKey>,
    /// Agents registered as paid on first sight.
    pub paid_agents: Vec<String>,
    /// Lifetime of access tokens.
    pub token_ttl: Duration,
    /// Longest hold of an idle subscribe long-poll.
    pub long_poll_hold: Duration,
    /// How long a pipe-task "minute" lasts (tests shorten it; default 60 s).
    pub minute: Duration,
    /// Test knob: deliver stream messages out of order and twice (swap neighbours, repeat some).
    pub stream_chaos: bool,
    /// Where files live (`<dir>/files`); `None` = a temporary directory removed on stop.
    pub data_dir: Option<std::path::PathBuf>,
    /// Largest file accepted by the upload handshake (default 25 MiB, `BLOCKS_MAX_UPLOAD_BYTES`).
    pub max_upload_bytes: u64,
    /// After a restart from `data_dir`: how long an agent instance known from before has to
    /// heartbeat again before its running tasks fail with `agent_instance_lost` (default 20 s).
    pub restart_grace: Duration,
    /// Host names served besides the loopback ones (`localhost`, `*.localhost`, 127.0.0.0/8,
    /// `[::1]`): exact names, or `.example.test` for a name and every name under it. Requests
    /// for any other host get 421 (DNS rebinding). CLI `--allow-host`, JS `allowedHosts`.
    pub allowed_hosts: Vec<String>,
    /// Longest time a connection may take to send a complete request head, counted from the
    /// accept or from the first byte after a keep-alive pause (default 10 s; then it is closed).
    pub header_timeout: Duration,
    /// Longest pause between two chunks of a request body (then 408), or between two writes of
    /// a response that make progress (then the connection is closed). Default 30 s.
    pub body_timeout: Duration,
    /// Longest keep-alive pause between two requests on a connection (default 75 s).
    pub keep_alive_timeout: Duration,
    /// Most connections open at once (default 1,024); more are answered 503 and closed.
    pub max_connections: usize,
    /// How long an instance has to acknowledge a StartTask (its first event on the task
    /// channel) before the task is taken back and sent again, to another instance if there is
    /// one (default 30 s; CLI `--ack-timeout`, JS `ackTimeoutMs`). After [`crate::DISPATCH_ATTEMPTS`]
    /// unanswered StartTasks the task fails with `task_not_acknowledged`.
    pub ack_timeout: Duration,
    /// Serve HTTPS (`--tls`): a CA kept in `<data_dir>/tls` (or made in memory), or the given
    /// one, signs a certificate for the loopback names; the URLs in the CDM are `https://`.
    /// `None`: plain HTTP.
    pub tls: Option<TlsCa>,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        DevnetConfig {
            port: 0,
            api_keys: vec![ApiKey {
                key: "bk_devnet_default".into(),
                user_id: "user_default".into(),
            }],
            paid_agents: Vec::new(),
            token_ttl: Duration::from_secs(3600),
            long_poll_hold: Duration::from_secs(60),
            minute: Duration::from_secs(60),
            stream_chaos: false,
            data_dir: None,
            max_upload_bytes: blocks_wire::MAX_UPLOAD_BYTES,
            restart_grace: Duration::from_secs(20),
            allowed_hosts: Vec::new(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(75),
            max_connections: 1024,
            ack_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// The flags, as `--help` prints them.
pub const USAGE: &str =
    "usage: blocks-devnet [--port N] [--api-key KEY[:USER]]... [--agent NAME:paid|free]... [--token-ttl SECS]
                     [--data-dir DIR | --in-memory] [--max-upload-bytes N] [--allow-host NAME]...
                     [--ack-timeout SECS] [--max-connections N] [--tls [--tls-ca CERT.pem --tls-ca-key KEY.pem]]
                     [--log error|warn|info|debug]
  --data-dir DIR     where the network keeps its database and files (default .blocks-devnet in the current directory)
  --in-memory        keep nothing: a throwaway network
  --allow-host NAME  also serve requests for this host name (besides localhost, 127.0.0.0/8 and [::1]);
                     .NAME allows NAME and every name under it; others get 421 (DNS rebinding)
  --tls              serve HTTPS: a CA kept in DIR/tls (made on first use) signs a certificate for
                     localhost, 127.0.0.1 and ::1; trust it with the NODE_EXTRA_CA_CERTS export
  --tls-ca CERT.pem, --tls-ca-key KEY.pem
                     sign with this CA instead (PEM certificate and PKCS#8 key)
  --max-connections N  most connections open at once (default 1024; more are answered 503)
  --ack-timeout SECS how long an agent instance has to acknowledge a task before it is sent again
                     (default 30); after three unanswered sends it fails with task_not_acknowledged";

/// What `blocks-devnet` was asked to run.
#[derive(Debug)]
pub struct Serve {
    /// The network.
    pub config: DevnetConfig,
    /// `error`, `warn`, `info` or `debug`, when `--log` was given.
    pub log: Option<String>,
}

/// Parse the flags (without the program name). Errors name the flag and what it needs.
pub fn parse(args: &[String]) -> Result<Serve, String> {
    let mut cfg = DevnetConfig::default();
    let mut f = Flags::default();
    let mut log = None;
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
                let (key, user) = v.split_once(':').unwrap_or((v.as_str(), ""));
                f.keys.push(api_key("--api-key", key, user, f.keys.len())?);
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
            "--token-ttl" => cfg.token_ttl = positive_secs(flag, number(flag, &value()?, "seconds")?)?,
            "--max-connections" => cfg.max_connections = max_connections(flag, number(flag, &value()?, "a number")?)?,
            "--ack-timeout" => cfg.ack_timeout = positive_secs(flag, number(flag, &value()?, "seconds")?)?,
            "--tls" => f.tls = true,
            "--tls-ca" => f.tls_ca = Some(value()?),
            "--tls-ca-key" => f.tls_key = Some(value()?),
            "--data-dir" => f.data_dir = Some(value()?.into()),
            "--in-memory" => f.in_memory = true,
            "--max-upload-bytes" => {
                let v = value()?;
                cfg.max_upload_bytes = v
                    .parse()
                    .map_err(|_| format!("--max-upload-bytes needs a whole number of bytes, got {v:?}"))?;
            }
            "--allow-host" => cfg.allowed_hosts.push(host_name(flag, value()?)?),
            "--log" => {
                let v = value()?;
                if !matches!(v.as_str(), "error" | "warn" | "info" | "debug") {
                    return Err(format!("--log must be error, warn, info or debug, got {v:?}"));
                }
                log = Some(v);
            }
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    f.apply(&mut cfg)?;
    Ok(Serve { config: cfg, log })
}

/// The flags that are settled once all are read: API keys, TLS and the data directory.
#[derive(Default)]
struct Flags {
    keys: Vec<ApiKey>,
    tls: bool,
    tls_ca: Option<String>,
    tls_key: Option<String>,
    data_dir: Option<std::path::PathBuf>,
    in_memory: bool,
}

impl Flags {
    /// Settle them into `cfg` (the CA files are read here).
    fn apply(self, cfg: &mut DevnetConfig) -> Result<(), String> {
        if !self.keys.is_empty() {
            cfg.api_keys = self.keys;
        }
        if !self.tls && (self.tls_ca.is_some() || self.tls_key.is_some()) {
            return Err("--tls-ca and --tls-ca-key go with --tls".into());
        }
        let read = |p: Option<String>, what: &str| {
            p.map(|p| std::fs::read_to_string(&p).map_err(|e| format!("{what} {p}: {e}")))
                .transpose()
        };
        cfg.tls = tls_ca_of(
            self.tls,
            read(self.tls_ca, "--tls-ca")?,
            read(self.tls_key, "--tls-ca-key")?,
            "--tls-ca and --tls-ca-key",
        )?;
        cfg.data_dir = match (self.in_memory, self.data_dir) {
            (true, Some(_)) => return Err("--in-memory and --data-dir exclude each other: choose one".into()),
            (true, None) => None,
            (false, Some(d)) => Some(d),
            (false, None) => Some(".blocks-devnet".into()),
        };
        Ok(())
    }
}

/// A number given as text (`flag` and `unit` name it in the error).
fn number(flag: &str, v: &str, unit: &str) -> Result<f64, String> {
    v.trim().parse().map_err(|_| format!("{flag} needs {unit}, got {v:?}"))
}

/// A positive, finite number of seconds (`what`: the flag or option it came from).
pub fn positive_secs(what: &str, secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs > 0.0 && secs < 1e9 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("{what} must be a positive number of seconds, got {secs}"))
    }
}

/// A positive, finite number of milliseconds (the embedded options count in ms).
pub fn positive_ms(what: &str, ms: f64) -> Result<Duration, String> {
    positive_secs(what, ms / 1000.0).map_err(|_| format!("{what} must be a positive number of milliseconds, got {ms}"))
}

/// A cap on open connections: a whole number from 1 to 65,536.
pub fn max_connections(what: &str, n: f64) -> Result<usize, String> {
    if n.fract() == 0.0 && (1.0..=65_536.0).contains(&n) {
        Ok(n as usize)
    } else {
        Err(format!("{what} must be a whole number from 1 to 65536, got {n}"))
    }
}

/// An API key and its user (`""`: the n-th default user, `user_<n+1>`); the key may not be empty.
pub fn api_key(what: &str, key: &str, user: &str, n: usize) -> Result<ApiKey, String> {
    if key.is_empty() {
        return Err(format!("{what} needs a non-empty key (KEY or KEY:USER)"));
    }
    let user_id = if user.is_empty() {
        format!("user_{}", n + 1)
    } else {
        user.to_string()
    };
    Ok(ApiKey {
        key: key.to_string(),
        user_id,
    })
}

/// A host name to serve besides the loopback ones (`.domain` for a domain and every name under it).
pub fn host_name(what: &str, v: String) -> Result<String, String> {
    if v.trim().trim_start_matches('.').is_empty() || v.contains(['/', ' ', ':']) {
        return Err(format!("{what} needs a host name (no port, no scheme), got {v:?}"));
    }
    Ok(v)
}

/// The TLS setting: off, the network's own CA, or a given CA (certificate and key PEM, both).
pub fn tls_ca_of(
    tls: bool,
    cert_pem: Option<String>,
    key_pem: Option<String>,
    what: &str,
) -> Result<Option<TlsCa>, String> {
    match (cert_pem, key_pem) {
        (Some(cert_pem), Some(key_pem)) => Ok(Some(TlsCa::Given { cert_pem, key_pem })),
        (None, None) => Ok(tls.then_some(TlsCa::Own)),
        _ => Err(format!(
            "{what} go together: the CA certificate and its private key (PEM)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn flags_parse_and_bad_ones_say_what_is_wrong() {
        let s = parse(&args(
            "--port 4700 --api-key k1 --api-key k2:bob --api-key k3: --token-ttl 2.5 --in-memory --log debug",
        ))
        .expect("parse");
        assert_eq!(s.config.port, 4700);
        let users: Vec<_> = s
            .config
            .api_keys
            .iter()
            .map(|k| (k.key.as_str(), k.user_id.as_str()))
            .collect();
        assert_eq!(users, [("k1", "user_1"), ("k2", "bob"), ("k3", "user_3")]);
        assert_eq!(s.config.token_ttl, Duration::from_millis(2500));
        assert!(s.config.data_dir.is_none());
        assert_eq!(s.log.as_deref(), Some("debug"));
        assert_eq!(
            parse(&[]).expect("defaults").config.data_dir.as_deref(),
            Some(std::path::Path::new(".blocks-devnet"))
        );
        for (bad, says) in [
            ("--api-key :bob", "--api-key needs a non-empty key"),
            (
                "--token-ttl 0",
                "--token-ttl must be a positive number of seconds, got 0",
            ),
            ("--token-ttl soon", "--token-ttl needs seconds, got \"soon\""),
            ("--ack-timeout -1", "--ack-timeout must be a positive number of seconds"),
            ("--port 70000", "--port needs a number 0-65535"),
            ("--allow-host http://x", "--allow-host needs a host name"),
            ("--tls-ca a.pem", "--tls-ca and --tls-ca-key go with --tls"),
            ("--tls --tls-ca-key k.pem", "--tls-ca-key k.pem: "),
            ("--in-memory --data-dir d", "exclude each other"),
            ("--log loud", "--log must be error, warn, info or debug"),
            ("--frobnicate", "unknown flag --frobnicate"),
            ("--port", "--port needs a value"),
        ] {
            let e = parse(&args(bad)).err().unwrap_or_default();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
