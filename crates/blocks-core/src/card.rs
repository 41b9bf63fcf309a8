//! `agent-card.json`: validation of what the runtime consumes (agent spec §2), with errors that
//! name the field and the fix.

use serde_json::Value;

use crate::error::{Error, Result};

/// The parts of a card the runtime uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    /// `identity.agentName`.
    pub agent_name: String,
    /// `identity.displayName` (falls back to the agent name).
    pub display_name: String,
    /// `capabilities.taskKinds` (default `["request"]`).
    pub task_kinds: Vec<String>,
    /// `runtime.handler` (default `./handler.ts` like the official runner).
    pub handler: String,
    /// `runtime.handlerExport`.
    pub handler_export: Option<String>,
    /// `runtime.concurrency` (default 1).
    pub concurrency: u32,
    /// `runtime.expectedInstances` (default 1).
    pub expected_instances: u32,
    /// `runtime.maxPendingBacklog`.
    pub max_pending_backlog: Option<u32>,
    /// `runtime.maxRunningTimeSec`.
    pub max_running_time_sec: Option<u64>,
    /// Declared streams: `(name, direction, format, affinity)`.
    pub streams: Vec<(String, String, String, String)>,
}

fn field_error(field: &str, problem: &str, fix: &str) -> Error {
    Error::InvalidArgument(format!("agent-card.json: {field} {problem}; {fix}"))
}

fn opt_uint(v: &Value, path: &str, field: &str, min: u64) -> Result<Option<u64>> {
    match v.pointer(path) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => match x.as_u64() {
            Some(n) if n >= min => Ok(Some(n)),
            _ => Err(field_error(
                field,
                &format!("must be an integer ≥ {min}, got {x}"),
                &format!("set it to a whole number of at least {min} or remove it"),
            )),
        },
    }
}

/// Validate a card object.
pub fn validate_card(card: &Value) -> Result<Card> {
    if !card.is_object() {
        return Err(Error::InvalidArgument(
            "agent-card.json must contain a JSON object".into(),
        ));
    }
    if card.get("skills").is_some() {
        return Err(field_error(
            "skills",
            "was renamed",
            "rename the top-level `skills` key to `tags`",
        ));
    }
    let identity = card.get("identity").filter(|i| i.is_object()).ok_or_else(|| {
        field_error(
            "identity",
            "is missing",
            "add an \"identity\" object with at least \"agentName\"",
        )
    })?;
    let agent_name = identity.get("agentName").and_then(Value::as_str).ok_or_else(|| {
        field_error(
            "identity.agentName",
            "is required",
            "add \"agentName\": \"my_agent\" (letters, digits, underscores)",
        )
    })?;
    if !blocks_wire::is_valid_agent_name(agent_name) {
        return Err(field_error(
            "identity.agentName",
            &format!("{agent_name:?} is invalid"),
            "use only letters, digits and underscores (no hyphens, dots or spaces), e.g. \"my_agent\"",
        ));
    }
    let display_name = identity
        .get("displayName")
        .and_then(Value::as_str)
        .unwrap_or(agent_name)
        .to_string();
    let task_kinds = match card.pointer("/capabilities/taskKinds") {
        None | Some(Value::Null) => vec!["request".to_string()],
        Some(Value::Array(a)) if !a.is_empty() => {
            let mut kinds = Vec::new();
            for k in a {
                match k.as_str() {
                    Some(s @ ("request" | "pipe")) if !kinds.iter().any(|x| x == s) => kinds.push(s.to_string()),
                    _ => {
                        return Err(field_error(
                            "capabilities.taskKinds",
                            &format!("has an invalid or repeated entry {k}"),
                            "list each of \"request\" and \"pipe\" at most once",
                        ))
                    }
                }
            }
            kinds
        }
        Some(other) => {
            return Err(field_error(
                "capabilities.taskKinds",
                &format!("must be a non-empty array, got {other}"),
                "use e.g. [\"request\"] or [\"request\", \"pipe\"]",
            ))
        }
    };
    let runtime = match card.get("runtime") {
        None => {
            return Err(field_error(
                "runtime",
                "section is missing",
                "add \"runtime\": { \"handler\": \"./handler.js\" }",
            ))
        }
        Some(r) if r.is_object() => r,
        Some(_) => {
            return Err(field_error(
                "runtime",
                "must be an object",
                "use \"runtime\": { \"handler\": \"./handler.js\" }",
            ))
        }
    };
    let handler = match runtime.get("handler") {
        None | Some(Value::Null) => "./handler.ts".to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            return Err(field_error(
                "runtime.handler",
                "must be a non-empty string",
                "point it at the handler file, e.g. \"./handler.js\"",
            ))
        }
    };
    let handler_export = match runtime.get("handlerExport") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            return Err(field_error(
                "runtime.handlerExport",
                "must be a non-empty string",
                "name the exported handler function",
            ))
        }
    };
    let concurrency = opt_uint(card, "/runtime/concurrency", "runtime.concurrency", 1)?.unwrap_or(1);
    let expected_instances = opt_uint(card, "/runtime/expectedInstances", "runtime.expectedInstances", 0)?.unwrap_or(1);
    let max_pending_backlog = opt_uint(card, "/runtime/maxPendingBacklog", "runtime.maxPendingBacklog", 0)?;
    let max_running_time_sec = opt_uint(card, "/runtime/maxRunningTimeSec", "runtime.maxRunningTimeSec", 1)?;
    let mut streams = Vec::new();
    if let Some(s) = card.get("streams").filter(|s| !s.is_null()) {
        let map = s.as_object().ok_or_else(|| {
            field_error(
                "streams",
                "must be an object",
                "map stream names to { direction, format }",
            )
        })?;
        for (name, decl) in map {
            let field = format!("streams.{name}");
            let direction = decl.get("direction").and_then(Value::as_str).unwrap_or_default();
            if !matches!(direction, "outbound" | "inbound" | "bidirectional") {
                return Err(field_error(
                    &format!("{field}.direction"),
                    "is missing or invalid",
                    "use \"outbound\", \"inbound\" or \"bidirectional\"",
                ));
            }
            let format = decl.get("format").and_then(Value::as_str).unwrap_or_default();
            if !matches!(format, "events" | "bytes") {
                return Err(field_error(
                    &format!("{field}.format"),
                    "is missing or invalid",
                    "use \"events\" or \"bytes\"",
                ));
            }
            let affinity = decl.get("affinity").and_then(Value::as_str).unwrap_or("dedicated");
            if !matches!(affinity, "dedicated" | "shared") {
                return Err(field_error(
                    &format!("{field}.affinity"),
                    "is invalid",
                    "use \"dedicated\" or \"shared\"",
                ));
            }
            if name == "_default" && affinity == "shared" {
                return Err(field_error(
                    &format!("{field}.affinity"),
                    "cannot be \"shared\" for _default",
                    "give the shared stream its own name",
                ));
            }
            if task_kinds == ["request"] && name != "_default" {
                return Err(field_error(
                    &field,
                    "is not allowed on a request-only agent",
                    "request-only agents may declare only the `_default` stream",
                ));
            }
            streams.push((
                name.clone(),
                direction.to_string(),
                format.to_string(),
                affinity.to_string(),
            ));
        }
    }
    let u32_of =
        |v: u64, field: &str| u32::try_from(v).map_err(|_| field_error(field, "is too large", "use a smaller number"));
    Ok(Card {
        agent_name: agent_name.to_string(),
        display_name,
        task_kinds,
        handler,
        handler_export,
        concurrency: u32_of(concurrency, "runtime.concurrency")?,
        expected_instances: u32_of(expected_instances, "runtime.expectedInstances")?,
        max_pending_backlog: max_pending_backlog
            .map(|v| u32_of(v, "runtime.maxPendingBacklog"))
            .transpose()?,
        max_running_time_sec,
        streams,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn card() -> Value {
        json!({"identity": {"agentName": "echo"}, "runtime": {"handler": "./h.js", "concurrency": 2}})
    }

    #[test]
    fn a_minimal_card_is_accepted_with_defaults() {
        let c = validate_card(&card()).unwrap();
        assert_eq!(c.agent_name, "echo");
        assert_eq!(c.concurrency, 2);
        assert_eq!(c.expected_instances, 1);
        assert_eq!(c.task_kinds, vec!["request"]);
        assert_eq!(c.display_name, "echo");
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        let mut c = card();
        c["identity"]["agentName"] = json!("my-agent");
        let e = validate_card(&c).unwrap_err().to_string();
        assert!(e.contains("identity.agentName") && e.contains("underscores"), "{e}");
        let e = validate_card(&json!({"identity": {"agentName": "a"}}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("runtime") && e.contains("missing"), "{e}");
        let e = validate_card(&json!({"runtime": {}})).unwrap_err().to_string();
        assert!(e.contains("identity"), "{e}");
        let mut c = card();
        c["runtime"]["concurrency"] = json!(0);
        assert!(validate_card(&c)
            .unwrap_err()
            .to_string()
            .contains("runtime.concurrency"));
        let mut c = card();
        c["capabilities"] = json!({"taskKinds": ["stream"]});
        assert!(validate_card(&c)
            .unwrap_err()
            .to_string()
            .contains("capabilities.taskKinds"));
        let mut c = card();
        c["streams"] = json!({"out": {"direction": "sideways", "format": "bytes"}});
        c["capabilities"] = json!({"taskKinds": ["pipe"]});
        assert!(validate_card(&c)
            .unwrap_err()
            .to_string()
            .contains("streams.out.direction"));
        let mut c = card();
        c["skills"] = json!([]);
        assert!(validate_card(&c).unwrap_err().to_string().contains("tags"));
    }

    #[test]
    fn request_only_agents_may_only_declare_default() {
        let mut c = card();
        c["streams"] = json!({"tokens": {"direction": "outbound", "format": "bytes"}});
        assert!(validate_card(&c).is_err());
        c["streams"] = json!({"_default": {"direction": "outbound", "format": "bytes"}});
        assert_eq!(validate_card(&c).unwrap().streams.len(), 1);
    }
}
