//! Module functions of the registry and config documents (`getAgent`, `fetchAgentRegistry`…,
//! `removeAgent`, `fetchCdmConfig`, `loadBlocksConfig`); lib/registry.js gives them their public
//! signatures.

use blocks_core::http::HttpClient;
use blocks_core::registry::{self, RegistryQuery};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;

use crate::errors::OrJs;

/// Where and how a registry call goes.
#[napi(object)]
pub struct NativeRegistryOptions {
    pub base_url: String,
    pub api_key: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub skill: Option<String>,
    pub tag: Option<String>,
    pub listing: Option<String>,
    pub reason: Option<String>,
    /// Extra CAs and the proxy.
    pub net: Option<crate::net::NativeNetOptions>,
}

async fn http(net: Option<crate::net::NativeNetOptions>) -> Result<HttpClient> {
    HttpClient::with_net(&crate::net::net_options(net)).or_js().await
}

/// One agent's registry record, or null.
#[napi(ts_return_type = "Promise<any>")]
pub async fn registry_get_agent(agent_name: String, mut opts: NativeRegistryOptions) -> Result<Option<Value>> {
    registry::get_agent(
        &http(opts.net.take()).await?,
        &opts.base_url,
        &agent_name,
        opts.api_key.as_deref(),
    )
    .await
    .or_js()
    .await
}

/// A page of the registry.
#[napi(ts_return_type = "Promise<any>")]
pub async fn registry_list(mut opts: NativeRegistryOptions) -> Result<Value> {
    let q = RegistryQuery {
        limit: opts.limit,
        cursor: opts.cursor,
        skill: opts.skill,
        tag: opts.tag,
        listing: opts.listing,
    };
    registry::list_agents(
        &http(opts.net.take()).await?,
        &opts.base_url,
        &q,
        opts.api_key.as_deref(),
    )
    .await
    .or_js()
    .await
}

/// Remove an agent: true when removed, false when unknown.
#[napi]
pub async fn registry_remove(agent_name: String, mut opts: NativeRegistryOptions) -> Result<bool> {
    registry::remove_agent(
        &http(opts.net.take()).await?,
        &opts.base_url,
        &agent_name,
        opts.api_key.as_deref(),
        opts.reason.as_deref(),
    )
    .await
    .or_js()
    .await
}

/// The CDM document (explicit URL, else `BLOCKS_CDM_URL`, else the hosted default), validated.
#[napi(ts_return_type = "Promise<any>")]
pub async fn fetch_cdm_config(url: Option<String>, net: Option<crate::net::NativeNetOptions>) -> Result<Value> {
    let cdm = blocks_core::config::fetch_cdm(&http(net).await?, url.as_deref())
        .await
        .or_js()
        .await?;
    Ok(cdm.raw)
}

/// The legacy Blocks config document.
#[napi(ts_return_type = "Promise<any>")]
pub async fn load_blocks_config(url: String, net: Option<crate::net::NativeNetOptions>) -> Result<Value> {
    registry::load_blocks_config(&http(net).await?, &url)
        .await
        .or_js()
        .await
}

/// Channel names and the rules about them (from blocks-wire): `{ task, control, stream, setup,
/// skill, all, public, private, log }`; a missing id comes back as `{ error }`.
#[napi(
    ts_args_type = "kind: string, a?: string, b?: string",
    ts_return_type = "{ channel?: string; error?: string }"
)]
pub fn channel_name(kind: String, a: Option<String>, b: Option<String>) -> Value {
    let a = a.unwrap_or_default();
    let b = b.unwrap_or_default();
    let need = |v: &str, what: &str| {
        if v.is_empty() {
            Err(format!("{what} required"))
        } else {
            Ok(())
        }
    };
    let r: std::result::Result<String, String> = match kind.as_str() {
        "task" => need(&a, "orgId")
            .and(need(&b, "taskId"))
            .map(|()| blocks_wire::task_channel(&a, &b)),
        "setup" => need(&a, "orgId")
            .and(need(&b, "taskId"))
            .map(|()| blocks_wire::setup_channel(&a, &b)),
        "control" => need(&a, "agentId").map(|()| blocks_wire::control_channel(&a)),
        "stream" => need(&a, "agentName")
            .and(need(&b, "streamId"))
            .map(|()| blocks_wire::stream_channel(&a, &b)),
        "skill" => need(&a, "skill").map(|()| blocks_wire::registry_skill_channel(&a)),
        "all" | "public" | "private" | "log" => Ok(format!("registry.{kind}")),
        other => Err(format!("unknown channel kind {other:?}")),
    };
    match r {
        Ok(c) => serde_json::json!({ "channel": c }),
        Err(e) => serde_json::json!({ "error": e }),
    }
}

/// A skill name as a registry channel segment.
#[napi]
pub fn skill_slug(skill: String) -> String {
    blocks_wire::skill_slug(&skill)
}

/// True for an owner id reserved for system namespaces.
#[napi]
pub fn is_reserved_owner_id(id: String) -> bool {
    blocks_wire::is_reserved_owner_id(&id)
}

/// True for a protocol version this SDK speaks.
#[napi]
pub fn is_protocol_version_supported(version: String) -> bool {
    blocks_wire::is_protocol_version_supported(&version)
}

/// Every protocol version this SDK speaks.
#[napi]
pub fn supported_protocol_versions() -> Vec<String> {
    blocks_wire::SUPPORTED_PROTOCOL_VERSIONS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Stream-id rule (STRM-18): `null` when valid, else the message.
#[napi]
pub fn stream_id_error(id: String) -> Option<String> {
    blocks_core::agent::validate_stream_id(&id).err().map(|e| e.to_string())
}
