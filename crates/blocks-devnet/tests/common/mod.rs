//! HTTP helpers shared by the devnet's integration tests.

use serde_json::{json, Value};

/// GET `url`: status and JSON body (`Null` when the body is not JSON).
pub async fn get(c: &reqwest::Client, url: String) -> (u16, Value) {
    let r = c.get(url).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// POST `body` as JSON to `url`, with an optional bearer token: status and JSON body.
pub async fn post(c: &reqwest::Client, url: String, bearer: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = c.post(url).json(&body);
    if let Some(b) = bearer {
        r = r.bearer_auth(b);
    }
    let r = r.send().await.expect("post");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// A JSON-RPC request envelope.
pub fn rpc(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": "rpc-1", "method": method, "params": params})
}
