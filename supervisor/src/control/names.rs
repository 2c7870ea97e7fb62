//! Function names, ARNs and qualifiers as they appear in request paths.

use crate::http::{ApiError, ErrorKind};
use crate::registry::LATEST;

/// A function reference resolved from the path and `Qualifier` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub qualifier: Option<String>,
}

pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{name}' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9-_]{{1,64}}"
        )))
    }
}

/// `$LATEST`, a version number, or an alias name (aliases are not supported,
/// so they resolve to "not found" rather than a parameter error).
pub fn validate_qualifier(q: &str) -> Result<(), ApiError> {
    let ok = q == LATEST
        || (!q.is_empty()
            && q.len() <= 128
            && q.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{q}' at 'qualifier' failed to satisfy constraint: Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)"
        )))
    }
}

/// Accepts `name`, `name:qualifier`, `account:function:name[:qualifier]` and
/// `arn:aws:lambda:region:account:function:name[:qualifier]`.
pub fn resolve(
    raw: &str,
    qualifier_param: Option<&str>,
    region: &str,
    account: &str,
) -> Result<FunctionRef, ApiError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (name, arn_qualifier) = match parts.as_slice() {
        [name] => (*name, None),
        [name, q] => (*name, Some(*q)),
        [acct, "function", name] => {
            check_account(acct, account)?;
            (*name, None)
        }
        [acct, "function", name, q] => {
            check_account(acct, account)?;
            (*name, Some(*q))
        }
        ["arn", partition, "lambda", reg, acct, "function", rest @ ..] if !rest.is_empty() && rest.len() <= 2 => {
            if !partition.starts_with("aws") {
                return Err(ApiError::invalid(format!("Invalid ARN partition in '{raw}'")));
            }
            if *reg != region {
                return Err(ApiError::invalid(format!(
                    "Region '{reg}' in the function ARN does not match this endpoint's region '{region}'"
                )));
            }
            check_account(acct, account)?;
            (rest[0], rest.get(1).copied())
        }
        _ => {
            return Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{raw}' at 'functionName' failed to satisfy constraint: Member must be a function name or ARN"
            )))
        }
    };
    validate_name(name)?;
    let qualifier = match (arn_qualifier, qualifier_param.filter(|q| !q.is_empty())) {
        (Some(a), Some(p)) if a != p => return Err(ApiError::invalid(
            "The derived qualifier from the function name does not match the specified qualifier.",
        )),
        (a, p) => a.or(p),
    };
    if let Some(q) = qualifier {
        validate_qualifier(q)?;
    }
    Ok(FunctionRef {
        name: name.to_owned(),
        qualifier: qualifier.map(str::to_owned),
    })
}

fn check_account(got: &str, want: &str) -> Result<(), ApiError> {
    if got == want {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::ResourceNotFound,
            format!("Function not found in account {got}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(raw: &str, q: Option<&str>) -> Result<FunctionRef, ApiError> {
        resolve(raw, q, "us-east-1", "000000000000")
    }

    #[test]
    fn resolves_every_supported_form() {
        let plain = FunctionRef {
            name: "f".into(),
            qualifier: None,
        };
        assert_eq!(r("f", None).expect("plain"), plain);
        assert_eq!(r("f:3", None).expect("q").qualifier.as_deref(), Some("3"));
        assert_eq!(r("000000000000:function:f", None).expect("partial"), plain);
        assert_eq!(
            r("arn:aws:lambda:us-east-1:000000000000:function:f", None).expect("arn"),
            plain
        );
        let q = r(
            "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
            Some("$LATEST"),
        )
        .expect("arn q");
        assert_eq!(q.qualifier.as_deref(), Some("$LATEST"));
        assert_eq!(
            r("f", Some("7")).expect("param").qualifier.as_deref(),
            Some("7")
        );
    }

    #[test]
    fn rejects_bad_names_and_mismatches() {
        for bad in ["", "a/b", "has space", &"x".repeat(65), "a:b:c:d:e"] {
            assert!(r(bad, None).is_err(), "{bad:?}");
        }
        assert!(r("f:1", Some("2")).is_err());
        assert!(r("arn:aws:lambda:eu-west-1:000000000000:function:f", None).is_err());
        assert_eq!(
            r("111111111111:function:f", None).expect_err("acct").kind,
            ErrorKind::ResourceNotFound
        );
        assert!(r("f", Some("bad qualifier!")).is_err());
    }
}
