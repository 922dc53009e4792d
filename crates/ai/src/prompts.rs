//! Prompt APIs: `POST /apis/NAME {"var": "value", …}` fills the template's `{{var}}`s,
//! calls the configured model and returns the answer as JSON (the parsed object when the
//! prompt asks for JSON, else `{"text": "…"}`). Missing variables give a 400 naming them.

use std::sync::Arc;

use holdfast_proxy::plugin::{Body, RequestContext};
use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::engine::{Attempts, Gateway};
use crate::error::AiError;
use crate::handler::{begin_call, completion_text, finish_call, json_response, CallEnd};
use crate::usage;

/// Fill `template` with `vars`; `Err` lists the missing variable names.
pub fn fill(template: &str, variables: &[String], vars: &Value) -> Result<String, Vec<String>> {
    let missing: Vec<String> = variables
        .iter()
        .filter(|v| vars.get(v.as_str()).is_none_or(Value::is_null))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        match &vars[name] {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

pub async fn call(
    gateway: &Arc<Gateway>,
    name: &str,
    vars: Value,
    ctx: &RequestContext,
) -> Result<Response<Body>, AiError> {
    let Some(api) = gateway.config.prompts.get(name) else {
        let names: Vec<&str> = gateway.config.prompts.keys().map(String::as_str).collect();
        return Err(AiError::not_found(
            format!("no prompt API `{name}`; configured: {}", names.join(", ")),
            "unknown_prompt_api",
        ));
    };
    if !vars.is_object() {
        return Err(AiError::bad_request(format!(
            "the body must be a JSON object with the variables: {}",
            api.variables.join(", ")
        )));
    }
    let prompt = fill(&api.template, &api.variables, &vars).map_err(|missing| {
        AiError::bad_request(format!("missing variables: {}", missing.join(", ")))
    })?;
    let mut system = api.system.clone();
    // OpenAI (and Azure) refuse JSON mode (400) unless a message says "json": say it in the
    // system message when neither it nor the prompt does.
    if api.json && !mentions_json(system.as_deref().unwrap_or_default()) && !mentions_json(&prompt)
    {
        system = Some(match system {
            Some(s) if !s.trim().is_empty() => format!("{s}\n\n{JSON_INSTRUCTION}"),
            _ => JSON_INSTRUCTION.to_string(),
        });
    }
    let mut messages = Vec::new();
    if let Some(system) = &system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": prompt}));
    let mut req = json!({"model": api.model, "messages": messages});
    if api.json {
        req["response_format"] = json!({"type": "json_object"});
    }
    if let Some(n) = api.max_tokens {
        req["max_tokens"] = json!(n);
    }
    if let Some(t) = api.temperature {
        req["temperature"] = json!(t);
    }
    let model = begin_call(gateway, &req, ctx)?;
    let mut attempts = Attempts::tracking(ctx.extra.clone());
    let done = match gateway.chat(&model, &req, &mut attempts).await {
        Ok(d) => d,
        Err(e) => {
            finish_call(gateway, ctx, &attempts, CallEnd::failed(&e));
            return Err(e);
        }
    };
    let text = done.body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (u, estimated) = match done.usage {
        Some(u) => (u, false),
        None => (
            usage::estimate(
                &done.deployment.config.model,
                &req,
                &completion_text(&done.body),
            ),
            true,
        ),
    };
    let out = if api.json {
        match serde_json::from_str::<Value>(strip_fences(&text)) {
            Ok(v) => v,
            Err(e) => {
                let err = AiError::bad_upstream(
                    &done.deployment.config.name,
                    format!("asked for JSON, got text that is not JSON ({e})"),
                );
                // The provider answered (and charges for) the call: keep its tokens and cost.
                let end = CallEnd {
                    usage: Some(u),
                    estimated,
                    ..CallEnd::failed(&err)
                };
                finish_call(gateway, ctx, &attempts, end);
                return Err(err);
            }
        }
    } else {
        json!({"text": text})
    };
    finish_call(gateway, ctx, &attempts, CallEnd::ok(u, estimated, None));
    Ok(json_response(
        StatusCode::OK,
        &out,
        Some(&done.deployment.config.name),
    ))
}

/// The system instruction a JSON prompt API gets when none of its messages says "json".
pub const JSON_INSTRUCTION: &str = "Answer with a single JSON object.";

/// True when `text` has the word "json" in some form (any case), as OpenAI's JSON mode wants.
fn mentions_json(text: &str) -> bool {
    text.to_ascii_lowercase().contains("json")
}

/// Models often wrap JSON in ```json fences.
fn strip_fences(text: &str) -> &str {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .unwrap_or(t);
    t.strip_suffix("```").unwrap_or(t).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_names_missing() {
        let vars = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            fill("x {{a}} y {{ b }}", &vars, &json!({"a": "1", "b": 2})).unwrap(),
            "x 1 y 2"
        );
        assert_eq!(
            fill("{{a}}{{b}}", &vars, &json!({"a": "1"})).unwrap_err(),
            vec!["b"]
        );
    }
}
