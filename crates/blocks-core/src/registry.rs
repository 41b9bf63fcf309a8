//! The agent registry (consumer spec §5.9, agent spec §4.2) and the legacy Blocks config document:
//! `GET /api/v1/registry/agents?agentName=` (one agent), `?include=full[&limit&cursor&skill|tag|listing]`
//! (a page), `DELETE ?agentName=` (remove). An optional API key goes as `Bearer`; without one no
//! `Authorization` header is sent.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::http::{capture_write_affinity, error_body, HttpClient};

/// A page query of the registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryQuery {
    /// Page size.
    pub limit: Option<u32>,
    /// Cursor from the previous page's `next`.
    pub cursor: Option<String>,
    /// Only agents with this skill.
    pub skill: Option<String>,
    /// Only agents with this tag.
    pub tag: Option<String>,
    /// `public` or `private`.
    pub listing: Option<String>,
}

fn registry_url(base_url: &str) -> Result<String> {
    let base = base_url.trim_end_matches('/');
    if base.is_empty() {
        return Err(Error::InvalidArgument(
            "the registry needs a backend baseUrl (options.baseUrl, e.g. the devnet's URL)".into(),
        ));
    }
    Ok(format!("{base}/api/v1/registry/agents"))
}

async fn send(
    http: &HttpClient,
    method: reqwest::Method,
    url: &str,
    query: &[(&str, String)],
    api_key: Option<&str>,
    body: Option<&Value>,
    what: &str,
) -> Result<Option<Value>> {
    let mut req = http.backend(method, url).query(query);
    if let Some(k) = api_key.filter(|k| !k.is_empty()) {
        req = req.header("authorization", format!("Bearer {}", k.trim_start_matches("Bearer ")));
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Error::transport(format!("{what} failed"), e))?;
    capture_write_affinity(resp.headers());
    let status = resp.status().as_u16();
    if status == 404 {
        return Ok(None);
    }
    if !(200..300).contains(&status) {
        let body = error_body(resp).await;
        let msg = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(body);
        return Err(Error::Http {
            context: format!("{what} failed"),
            status,
            body: msg,
        });
    }
    let text = resp
        .text()
        .await
        .map_err(|e| Error::transport(format!("{what} failed"), e))?;
    if text.trim().is_empty() {
        return Ok(Some(json!({})));
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Protocol(format!("{what}: the answer is not JSON: {e}")))
}

/// A registry record as the SDK shows it: `name` → `displayName`, `registeredAt` → `createdAt`,
/// `listing` defaulting to `public`; the other fields as they are.
pub fn agent_entry(raw: &Value) -> Value {
    let mut out = Map::new();
    let Some(o) = raw.as_object() else { return Value::Null };
    for (k, v) in o {
        match k.as_str() {
            "name" => {
                out.insert("displayName".into(), v.clone());
            }
            "registeredAt" => {
                out.insert("createdAt".into(), v.clone());
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if !out.get("listing").is_some_and(Value::is_string) {
        out.insert("listing".into(), json!("public"));
    }
    Value::Object(out)
}

/// One agent's registry record as the registry sends it, or `None` when it does not know it (404).
pub async fn agent_record(
    http: &HttpClient,
    base_url: &str,
    agent_name: &str,
    bearer: Option<&str>,
) -> Result<Option<Value>> {
    let url = registry_url(base_url)?;
    let v = send(
        http,
        reqwest::Method::GET,
        &url,
        &[("agentName", agent_name.to_string())],
        bearer,
        None,
        &format!("registry lookup of {agent_name}"),
    )
    .await?;
    Ok(v.and_then(|v| v.get("agent").cloned()).filter(|a| a.is_object()))
}

/// One agent's registry record (mapped, see [`agent_entry`]), or `None` when the registry does
/// not know it (404).
pub async fn get_agent(
    http: &HttpClient,
    base_url: &str,
    agent_name: &str,
    api_key: Option<&str>,
) -> Result<Option<Value>> {
    if agent_name.is_empty() {
        return Err(Error::InvalidArgument("getAgent needs an agent name".into()));
    }
    Ok(agent_record(http, base_url, agent_name, api_key)
        .await?
        .map(|a| agent_entry(&a)))
}

/// A page of the registry: `{ agents, totalCount, next? }` (`{ agents: [], totalCount: 0 }` on 404).
pub async fn list_agents(http: &HttpClient, base_url: &str, q: &RegistryQuery, api_key: Option<&str>) -> Result<Value> {
    let url = registry_url(base_url)?;
    let mut query = vec![("include", "full".to_string())];
    if let Some(l) = q.limit {
        query.push(("limit", l.to_string()));
    }
    for (k, v) in [
        ("cursor", &q.cursor),
        ("skill", &q.skill),
        ("tag", &q.tag),
        ("listing", &q.listing),
    ] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            query.push((k, v.clone()));
        }
    }
    let Some(v) = send(
        http,
        reqwest::Method::GET,
        &url,
        &query,
        api_key,
        None,
        "registry listing",
    )
    .await?
    else {
        return Ok(json!({ "agents": [], "totalCount": 0 }));
    };
    let agents: Vec<Value> = v
        .get("agents")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter(|x| x.is_object()).map(agent_entry).collect())
        .unwrap_or_default();
    let mut out = json!({
        "agents": agents,
        "totalCount": v.get("totalCount").and_then(Value::as_u64).unwrap_or(agents.len() as u64),
    });
    if let Some(n) = v.get("next").filter(|n| n.is_string()) {
        out["next"] = n.clone();
    }
    Ok(out)
}

/// Remove an agent from the registry: true when removed, false when it was not there (404).
pub async fn remove_agent(
    http: &HttpClient,
    base_url: &str,
    agent_name: &str,
    api_key: Option<&str>,
    reason: Option<&str>,
) -> Result<bool> {
    if agent_name.is_empty() {
        return Err(Error::InvalidArgument("removeAgent needs an agent name".into()));
    }
    let url = registry_url(base_url)?;
    let body = reason.map(|r| json!({ "reason": r }));
    let r = send(
        http,
        reqwest::Method::DELETE,
        &url,
        &[("agentName", agent_name.to_string())],
        api_key,
        body.as_ref(),
        &format!("removal of {agent_name}"),
    )
    .await?;
    Ok(r.is_some())
}

/// The legacy Blocks config document: `{ publishKey, subscribeKey, blocksBackendUrl }` (missing
/// optional fields as `""`).
pub async fn load_blocks_config(http: &HttpClient, url: &str) -> Result<Value> {
    let resp = http
        .inner()
        .get(url)
        .send()
        .await
        .map_err(|e| Error::transport(format!("Failed to load Blocks config from {url}"), e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Error::Config(format!(
            "Failed to load Blocks config: {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )));
    }
    let v: Value = resp
        .json()
        .await
        .map_err(|e| Error::transport(format!("Failed to load Blocks config from {url}"), e))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let subscribe_key = field("subscribeKey");
    if subscribe_key.is_empty() {
        return Err(Error::Config(format!("Blocks config at {url} is missing subscribeKey")));
    }
    Ok(json!({
        "publishKey": field("publishKey"),
        "subscribeKey": subscribe_key,
        "blocksBackendUrl": field("blocksBackendUrl"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_mapped() {
        let e = agent_entry(&json!({ "agentName": "a", "name": "A", "registeredAt": "t", "billingMode": "paid" }));
        assert_eq!(e["displayName"], "A");
        assert_eq!(e["createdAt"], "t");
        assert_eq!(e["listing"], "public");
        assert_eq!(e["billingMode"], "paid");
        assert!(e.get("name").is_none());
    }
}
