//! Configuration: the CDM document and the precedence rule explicit option > `BLOCKS_*` env > CDM.

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::http::HttpClient;

/// Billing mode of a client or agent; selects the keyset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingMode {
    /// `free`: the CDM `playground` keyset.
    Free,
    /// `paid`: the CDM `network` keyset.
    Paid,
}

impl BillingMode {
    /// Parse the exact wire value (`free` or `paid`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "free" => Some(BillingMode::Free),
            "paid" => Some(BillingMode::Paid),
            _ => None,
        }
    }

    /// Wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            BillingMode::Free => "free",
            BillingMode::Paid => "paid",
        }
    }
}

/// One PubNub keyset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyset {
    /// Publish key.
    pub publish_key: String,
    /// Subscribe key.
    pub subscribe_key: String,
}

/// The CDM document.
#[derive(Debug, Clone)]
pub struct Cdm {
    /// Keyset for billing mode `free`.
    pub playground: Keyset,
    /// Keyset for billing mode `paid`.
    pub network: Keyset,
    /// Backend root URL (trailing slashes stripped), empty if absent.
    pub base_url: String,
    /// Realtime origin (our `pubnub.origin` extension), if the document names one.
    pub pubnub_origin: Option<String>,
    /// The document as served.
    pub raw: Value,
}

impl Cdm {
    /// Keyset for a billing mode.
    pub fn keyset(&self, mode: BillingMode) -> &Keyset {
        match mode {
            BillingMode::Free => &self.playground,
            BillingMode::Paid => &self.network,
        }
    }

    /// Parse and validate a CDM document.
    pub fn from_value(raw: Value) -> Result<Self> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RawKeys {
            publish_key: Option<String>,
            subscribe_key: Option<String>,
        }
        let keys = |name: &str| -> Result<Keyset> {
            let k: Option<RawKeys> = raw.get(name).and_then(|v| serde_json::from_value(v.clone()).ok());
            match k {
                Some(RawKeys {
                    publish_key: Some(p),
                    subscribe_key: Some(s),
                }) if !p.is_empty() && !s.is_empty() => Ok(Keyset {
                    publish_key: p,
                    subscribe_key: s,
                }),
                _ => Err(Error::Config(format!("CDM config missing {name} keys"))),
            }
        };
        let playground = keys("playground")?;
        let network = keys("network")?;
        let base_url = raw
            .pointer("/api/baseUrl")
            .and_then(Value::as_str)
            .map(|s| s.trim_end_matches('/').to_string())
            .unwrap_or_default();
        let pubnub_origin = raw
            .pointer("/pubnub/origin")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end_matches('/').to_string());
        Ok(Cdm {
            playground,
            network,
            base_url,
            pubnub_origin,
            raw,
        })
    }
}

/// Fetch the CDM document: explicit URL, else `BLOCKS_CDM_URL`, else the default URL.
pub async fn fetch_cdm(http: &HttpClient, url: Option<&str>) -> Result<Cdm> {
    let url = url
        .map(str::to_string)
        .or_else(|| env("BLOCKS_CDM_URL"))
        .unwrap_or_else(|| blocks_wire::DEFAULT_CDM_URL.into());
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::Config(format!("CDM URL must be http(s): {url:?}")));
    }
    let resp = http
        .inner()
        .get(&url)
        .send()
        .await
        .map_err(|e| Error::transport(format!("CDM config fetch failed ({url})"), e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Error::Config(format!(
            "CDM config fetch failed: {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )));
    }
    let raw: Value = resp
        .json()
        .await
        .map_err(|e| Error::transport(format!("CDM config fetch failed ({url})"), e))?;
    Cdm::from_value(raw)
}

/// Read an environment variable; empty strings count as unset (see README: we follow the Python SDK here,
/// the official Node SDK uses an empty value and then fails).
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Pick the first present value: explicit option, then environment variable, then fallback.
pub fn pick(explicit: Option<&str>, env_name: &str, fallback: Option<&str>) -> Option<String> {
    explicit
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| env(env_name))
        .or_else(|| fallback.filter(|s| !s.is_empty()).map(str::to_string))
}

/// Realtime origin: `BLOCKS_PUBNUB_ORIGIN`, else the CDM's `pubnub.origin`, else the hosted default.
pub fn realtime_origin(cdm_origin: Option<&str>) -> String {
    pick(None, "BLOCKS_PUBNUB_ORIGIN", cdm_origin)
        .unwrap_or_else(|| blocks_wire::DEFAULT_PUBNUB_ORIGIN.into())
        .trim_end_matches('/')
        .to_string()
}

/// True when plain `http://` to hosts other than loopback is allowed: the option, or
/// `BLOCKS_ALLOW_INSECURE_HTTP=1`.
pub fn insecure_http_allowed(option: bool) -> bool {
    option || env("BLOCKS_ALLOW_INSECURE_HTTP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Refuse a plain `http://` URL to a host that is not loopback (credentials would travel in
/// clear) unless it is allowed; `what` names the setting in the error.
pub fn check_transport_security(url: &str, what: &str, allow_insecure: bool) -> Result<()> {
    let Ok(u) = reqwest::Url::parse(url) else {
        return Ok(()); // malformed URLs fail later with their own error
    };
    if u.scheme() != "http" || allow_insecure {
        return Ok(());
    }
    let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    };
    if loopback {
        return Ok(());
    }
    Err(Error::Config(format!(
        "refusing plain http:// for {what} ({}): tokens and keys would cross the network in clear; use https://, or allow it for a trusted network with allowInsecureHttp: true (or BLOCKS_ALLOW_INSECURE_HTTP=1)",
        u.host_str().unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_cdm_document() {
        let cdm = Cdm::from_value(json!({
            "playground": {"publishKey": "pf", "subscribeKey": "sf"},
            "network": {"publishKey": "pp", "subscribeKey": "sp"},
            "api": {"baseUrl": "http://x:1//"},
            "pubnub": {"origin": "http://x:1"}
        }))
        .unwrap();
        assert_eq!(cdm.keyset(BillingMode::Free).subscribe_key, "sf");
        assert_eq!(cdm.keyset(BillingMode::Paid).publish_key, "pp");
        assert_eq!(cdm.base_url, "http://x:1");
        assert_eq!(cdm.pubnub_origin.as_deref(), Some("http://x:1"));
    }

    #[test]
    fn missing_keys_are_named() {
        let err = Cdm::from_value(json!({"network": {"publishKey": "p", "subscribeKey": "s"}})).unwrap_err();
        assert_eq!(err.to_string(), "CDM config missing playground keys");
        let err = Cdm::from_value(
            json!({"playground": {"publishKey": "p", "subscribeKey": "s"}, "network": {"publishKey": ""}}),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "CDM config missing network keys");
    }

    #[test]
    fn precedence() {
        assert_eq!(
            pick(Some("a"), "BLOCKS_TEST_UNSET_VAR", Some("c")).as_deref(),
            Some("a")
        );
        assert_eq!(pick(None, "BLOCKS_TEST_UNSET_VAR", Some("c")).as_deref(), Some("c"));
        assert_eq!(pick(Some(""), "BLOCKS_TEST_UNSET_VAR", None), None);
    }
}
