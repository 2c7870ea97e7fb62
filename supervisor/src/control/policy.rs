//! Resource-based policies (`/2015-03-31/functions/{name}/policy`): AddPermission,
//! RemovePermission, GetPolicy, stored per function, version or alias and returned as
//! Lambda builds them. They are kept and shown, not evaluated: every caller here
//! authenticates with the supervisor's own SigV4 credentials.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::handlers::{blocking, function_ref, parse_json, query_map};
use super::names::FunctionRef;
use crate::http::ApiError;
use crate::ids::uuid_v4;
use crate::registry::RegistryError;
use crate::Supervisor;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddPermissionRequest {
    statement_id: Option<String>,
    action: Option<String>,
    principal: Option<String>,
    source_arn: Option<String>,
    source_account: Option<String>,
    event_source_token: Option<String>,
    #[serde(rename = "PrincipalOrgID")]
    principal_org_id: Option<String>,
    function_url_auth_type: Option<String>,
    revision_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AddPermissionResponse {
    /// The statement as a JSON string, as Lambda returns it.
    statement: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetPolicyResponse {
    policy: String,
    revision_id: String,
}

fn invalid_pattern(field: &str, value: &str, pattern: &str) -> ApiError {
    ApiError::invalid(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: Member must satisfy regular expression pattern: {pattern}"
    ))
}

fn validate_sid(sid: &str) -> Result<(), ApiError> {
    let ok = (1..=100).contains(&sid.len())
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then_some(())
        .ok_or_else(|| invalid_pattern("statementId", sid, "([a-zA-Z0-9-_.]+)"))
}

fn validate_action(action: &str) -> Result<(), ApiError> {
    let ok = action == "*"
        || action.strip_prefix("lambda:").is_some_and(|a| {
            a == "*" || (!a.is_empty() && a.bytes().all(|b| b.is_ascii_alphabetic()))
        });
    ok.then_some(())
        .ok_or_else(|| invalid_pattern("action", action, "(lambda:[*]|lambda:[a-zA-Z]+|[*])"))
}

/// Lambda's `Principal` element: `*`, a service, an account (as its root) or an ARN.
fn principal(p: &str) -> Result<Value, ApiError> {
    if p.is_empty() || p.chars().any(char::is_whitespace) {
        return Err(invalid_pattern("principal", p, "[^\\s]+"));
    }
    Ok(if p == "*" {
        json!("*")
    } else if p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit()) {
        json!({ "AWS": format!("arn:aws:iam::{p}:root") })
    } else if p.starts_with("arn:") {
        json!({ "AWS": p })
    } else {
        json!({ "Service": p })
    })
}

fn condition(req: &AddPermissionRequest) -> Option<Value> {
    let mut equals = Map::new();
    let mut cond = Map::new();
    if let Some(a) = &req.source_account {
        equals.insert("AWS:SourceAccount".into(), json!(a));
    }
    if let Some(t) = &req.event_source_token {
        equals.insert("lambda:EventSourceToken".into(), json!(t));
    }
    if let Some(o) = &req.principal_org_id {
        equals.insert("aws:PrincipalOrgID".into(), json!(o));
    }
    if let Some(u) = &req.function_url_auth_type {
        equals.insert("lambda:FunctionUrlAuthType".into(), json!(u));
    }
    if !equals.is_empty() {
        cond.insert("StringEquals".into(), Value::Object(equals));
    }
    if let Some(arn) = &req.source_arn {
        cond.insert("ArnLike".into(), json!({ "AWS:SourceArn": arn }));
    }
    (!cond.is_empty()).then_some(Value::Object(cond))
}

fn statement(
    sup: &Supervisor,
    f: &FunctionRef,
    req: &AddPermissionRequest,
) -> Result<(String, Value), ApiError> {
    let sid = req
        .statement_id
        .clone()
        .ok_or_else(|| ApiError::invalid("StatementId is required"))?;
    validate_sid(&sid)?;
    let action = req
        .action
        .as_deref()
        .ok_or_else(|| ApiError::invalid("Action is required"))?;
    validate_action(action)?;
    let who = principal(
        req.principal
            .as_deref()
            .ok_or_else(|| ApiError::invalid("Principal is required"))?,
    )?;
    if let Some(t) = req.function_url_auth_type.as_deref() {
        if t != "NONE" && t != "AWS_IAM" {
            return Err(invalid_pattern("functionUrlAuthType", t, "NONE|AWS_IAM"));
        }
    }
    let mut s = json!({
        "Sid": sid,
        "Effect": "Allow",
        "Principal": who,
        "Action": action,
        "Resource": sup.function_arn(&f.name, f.qualifier.as_deref()),
    });
    if let Some(c) = condition(req) {
        s["Condition"] = c;
    }
    Ok((sid, s))
}

/// Lambda's errors for the registry's answers about policies.
fn policy_error(sup: &Supervisor, f: &FunctionRef, e: RegistryError) -> ApiError {
    match e {
        RegistryError::NotFound(_) => ApiError::not_found(format!(
            "Function not found: {}",
            sup.function_arn(&f.name, f.qualifier.as_deref())
        )),
        RegistryError::StatementExists(sid) => ApiError::conflict(format!(
            "The statement id ({sid}) provided already exists. Please provide a new statement id, or remove the existing statement."
        )),
        RegistryError::StatementNotFound(sid) => {
            ApiError::not_found(format!("Statement {sid} is not found in resource policy."))
        }
        other => other.into(),
    }
}

fn target(f: &FunctionRef) -> (&str, &str) {
    (&f.name, f.qualifier.as_deref().unwrap_or_default())
}

type Sup = State<Arc<Supervisor>>;

pub async fn add_permission(
    State(sup): Sup,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &query_map(q.as_deref()))?;
    let req: AddPermissionRequest = parse_json(&body)?;
    let (_, stmt) = statement(&sup, &f, &req)?;
    let text = stmt.to_string();
    blocking(sup, move |s| {
        let _guard = s.write_guard();
        let revisions = (req.revision_id.as_deref(), uuid_v4());
        s.registry()
            .add_statement(target(&f), stmt, revisions)
            .map_err(|e| policy_error(s, &f, e))
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(AddPermissionResponse { statement: text }),
    )
        .into_response())
}

pub async fn remove_permission(
    State(sup): Sup,
    Path((name, sid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let query: HashMap<String, String> = query_map(q.as_deref());
    let f = function_ref(&sup, &name, &query)?;
    let expected = query.get("RevisionId").cloned();
    blocking(sup, move |s| {
        let _guard = s.write_guard();
        s.registry()
            .remove_statement(target(&f), &sid, (expected.as_deref(), uuid_v4()))
            .map_err(|e| policy_error(s, &f, e))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn get_policy(
    State(sup): Sup,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &query_map(q.as_deref()))?;
    let out = blocking(sup, move |s| {
        let p = s
            .registry()
            .policy(target(&f).0, target(&f).1)?
            .ok_or_else(|| ApiError::not_found("The resource you requested does not exist."))?;
        let doc = json!({
            "Version": "2012-10-17",
            "Id": "default",
            "Statement": p.statements,
        });
        Ok(GetPolicyResponse {
            policy: doc.to_string(),
            revision_id: p.revision_id,
        })
    })
    .await?;
    Ok(Json(out).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_take_lambdas_shapes() {
        assert_eq!(principal("*").expect("star"), json!("*"));
        assert_eq!(
            principal("s3.amazonaws.com").expect("service"),
            json!({ "Service": "s3.amazonaws.com" })
        );
        assert_eq!(
            principal("123456789012").expect("account"),
            json!({ "AWS": "arn:aws:iam::123456789012:root" })
        );
        assert!(principal("two words").is_err());
    }

    #[test]
    fn sids_and_actions_are_checked() {
        assert!(validate_sid("s3-invoke.1_a").is_ok());
        assert!(validate_sid("bad sid").is_err());
        assert!(validate_sid(&"x".repeat(101)).is_err());
        for ok in ["lambda:InvokeFunction", "lambda:*", "*"] {
            assert!(validate_action(ok).is_ok(), "{ok}");
        }
        for bad in ["s3:GetObject", "lambda:", "lambda:Invoke-Function"] {
            assert!(validate_action(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conditions_follow_the_request() {
        let req = AddPermissionRequest {
            source_arn: Some("arn:aws:s3:::bucket".into()),
            source_account: Some("123456789012".into()),
            ..Default::default()
        };
        let c = condition(&req).expect("some");
        assert_eq!(c["ArnLike"]["AWS:SourceArn"], "arn:aws:s3:::bucket");
        assert_eq!(c["StringEquals"]["AWS:SourceAccount"], "123456789012");
        assert!(condition(&AddPermissionRequest::default()).is_none());
    }
}
