//! The TLS devnet (`--tls`, `LocalNetwork.start({ tls: true })`): a certificate authority of its
//! own signs a certificate for the loopback names, and the devnet serves HTTPS with rustls
//! (HTTP/2 when the client offers it by ALPN, HTTP/1.1 otherwise).
//!
//! The CA is made once and kept in the data directory (`<dir>/tls/ca.pem`, `ca-key.pem`, the key
//! readable by its owner only), so a developer trusts it once across restarts; an in-memory
//! devnet makes a new one each start, in its temporary directory. The server certificate is
//! made at every start (valid for `localhost`, `127.0.0.1`, `::1` and the allowed host names).
//! Clients trust the CA by `NODE_EXTRA_CA_CERTS=<dir>/tls/ca.pem` or the SDK's `tls.ca` option.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Which CA signs the devnet's certificate.
#[derive(Clone, Debug, Default)]
pub enum TlsCa {
    /// The one kept in the data directory (made there on first use), or a new one in memory.
    #[default]
    Own,
    /// A given CA (PEM certificate and its PEM private key): tests and teams that share one.
    Given {
        /// The CA certificate, PEM.
        cert_pem: String,
        /// Its private key, PEM (PKCS#8).
        key_pem: String,
    },
}

/// What the server needs to speak TLS, and what clients need to trust it.
pub struct TlsSetup {
    /// The rustls acceptor (ALPN `h2`, `http/1.1`).
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// Where the CA certificate is written (for `NODE_EXTRA_CA_CERTS`).
    pub ca_file: PathBuf,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("TLS set-up: {what}: {e}")
}

/// A new CA: certificate params and key.
fn new_ca() -> Result<(rcgen::Certificate, KeyPair), String> {
    let key = KeyPair::generate().map_err(|e| err("making the CA key", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA parameters", e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "blocks-devnet local CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "blocks-devnet");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let (now, years) = (time_now(), 10);
    params.not_before = now;
    params.not_after = now + time::Duration::days(365 * years);
    let cert = params.self_signed(&key).map_err(|e| err("signing the CA", e))?;
    Ok((cert, key))
}

fn time_now() -> time::OffsetDateTime {
    // a minute back: a client clock slightly behind still accepts the certificate
    time::OffsetDateTime::now_utc() - time::Duration::minutes(1)
}

/// A CA from PEM (certificate and key).
fn load_ca(cert_pem: &str, key_pem: &str) -> Result<(rcgen::Certificate, KeyPair), String> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| err("reading the CA key (PEM, PKCS#8)", e))?;
    let params =
        CertificateParams::from_ca_cert_pem(cert_pem).map_err(|e| err("reading the CA certificate (PEM)", e))?;
    if !matches!(params.is_ca, IsCa::Ca(_)) {
        return Err(err("the CA certificate", "it is not a CA (basicConstraints CA:FALSE)"));
    }
    // re-sign the parsed params with the same key: same subject and key, so what it signs
    // chains to the original certificate the clients trust
    let cert = params.self_signed(&key).map_err(|e| err("loading the CA", e))?;
    Ok((cert, key))
}

/// The CA kept in `dir` (made there on first use).
fn kept_ca(dir: &Path) -> Result<(rcgen::Certificate, KeyPair, String), String> {
    let (cert_file, key_file) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    if cert_file.exists() && key_file.exists() {
        let cert_pem =
            std::fs::read_to_string(&cert_file).map_err(|e| err(&format!("reading {}", cert_file.display()), e))?;
        let key_pem =
            std::fs::read_to_string(&key_file).map_err(|e| err(&format!("reading {}", key_file.display()), e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_file)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o077 != 0 {
                tracing::warn!(target: "blocks::devnet", "the devnet CA key {} is readable by others (mode {:o}): whoever reads it can impersonate hosts to those who trust this CA; chmod 600 it", key_file.display(), mode & 0o777);
            }
        }
        let (cert, key) = load_ca(&cert_pem, &key_pem)?;
        return Ok((cert, key, cert_pem));
    }
    let (cert, key) = new_ca()?;
    std::fs::create_dir_all(dir).map_err(|e| err(&format!("creating {}", dir.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    write_private(&key_file, key.serialize_pem().as_bytes())?;
    let pem = cert.pem();
    std::fs::write(&cert_file, &pem).map_err(|e| err(&format!("writing {}", cert_file.display()), e))?;
    Ok((cert, key, pem))
}

/// Write a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o
        .open(path)
        .map_err(|e| err(&format!("writing {}", path.display()), e))?;
    #[cfg(unix)]
    {
        // an existing file keeps its mode on open: set it
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(&format!("restricting {}", path.display()), e))?;
    }
    f.write_all(bytes)
        .map_err(|e| err(&format!("writing {}", path.display()), e))
}

/// Names the server certificate is valid for: the loopback ones and the allowed host names
/// (`.example.test` becomes `example.test` and `*.example.test`).
fn server_names(allowed_hosts: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    for h in allowed_hosts {
        match h.strip_prefix('.') {
            Some(domain) => {
                names.push(domain.to_string());
                names.push(format!("*.{domain}"));
            }
            None => names.push(h.clone()),
        }
    }
    names.dedup();
    names
}

/// Make (or load) the CA, sign a server certificate, build the acceptor. `kept` is the data
/// directory's `tls` folder (the CA persists there); `scratch` the in-memory devnet's temporary
/// directory (the CA file is written there for `NODE_EXTRA_CA_CERTS`).
pub fn setup(ca: &TlsCa, kept: Option<&Path>, scratch: &Path, allowed_hosts: &[String]) -> Result<TlsSetup, String> {
    let (ca_cert, ca_key, ca_pem, ca_file) = match (ca, kept) {
        (TlsCa::Given { cert_pem, key_pem }, _) => {
            let (c, k) = load_ca(cert_pem, key_pem)?;
            let file = kept.unwrap_or(scratch).join("given-ca.pem");
            std::fs::create_dir_all(kept.unwrap_or(scratch)).map_err(|e| err("creating the TLS directory", e))?;
            std::fs::write(&file, cert_pem).map_err(|e| err(&format!("writing {}", file.display()), e))?;
            (c, k, cert_pem.clone(), file)
        }
        (TlsCa::Own, Some(dir)) => {
            let (c, k, pem) = kept_ca(dir)?;
            (c, k, pem, dir.join("ca.pem"))
        }
        (TlsCa::Own, None) => {
            let (c, k) = new_ca()?;
            let pem = c.pem();
            let file = scratch.join("ca.pem");
            std::fs::write(&file, &pem).map_err(|e| err(&format!("writing {}", file.display()), e))?;
            (c, k, pem, file)
        }
    };
    let leaf_key = KeyPair::generate().map_err(|e| err("making the server key", e))?;
    let mut params =
        CertificateParams::new(server_names(allowed_hosts)).map_err(|e| err("server certificate names", e))?;
    params.distinguished_name.push(DnType::CommonName, "blocks-devnet");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time_now();
    params.not_before = now;
    params.not_after = now + time::Duration::days(365);
    let leaf = params
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .map_err(|e| err("signing the server certificate", e))?;
    // the leaf only: clients have the CA (a re-signed copy of it in the chain would differ from
    // the certificate they trust, with the same issuer and serial)
    let chain = vec![leaf.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| err("the server certificate", e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsSetup {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_pem,
        ca_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_ca_is_reused_and_a_given_one_must_be_a_ca() {
        let dir = std::env::temp_dir().join(format!("blocks-tls-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = setup(&TlsCa::Own, Some(&dir), &dir, &[]).expect("first");
        let again = setup(&TlsCa::Own, Some(&dir), &dir, &[".example.test".into()]).expect("again");
        assert_eq!(first.ca_pem, again.ca_pem, "the CA is kept across starts");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("ca-key.pem"))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the CA key is readable by its owner only");
        }
        let key = std::fs::read_to_string(dir.join("ca-key.pem")).expect("key");
        let leaf_only = TlsCa::Given {
            cert_pem: "not a certificate".into(),
            key_pem: key,
        };
        let e = setup(&leaf_only, None, &dir, &[]).err().expect("refused");
        assert!(e.contains("reading the CA certificate"), "{e}");
        assert_eq!(
            server_names(&[".example.test".into(), "devbox".into()]),
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "example.test",
                "*.example.test",
                "devbox"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
