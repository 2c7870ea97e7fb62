//! Parsing of the kernel command line (`/proc/cmdline`).
//!
//! The kernel hands unknown `key=value` parameters to init as environment variables but
//! its quoting rules differ between versions, so our PID 1 programs read `/proc/cmdline` themselves.

/// Splits a kernel command line into parameters, honouring double quotes the way the
/// kernel does: a quoted section may contain spaces and the quotes are removed.
pub fn split_params(line: &str) -> Vec<String> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut has_content = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                in_quotes = !in_quotes;
                has_content = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_content {
                    params.push(std::mem::take(&mut current));
                    has_content = false;
                }
            }
            c => {
                current.push(c);
                has_content = true;
            }
        }
    }
    if has_content {
        params.push(current);
    }
    params
}

/// Returns the value of the first `key=value` parameter named `key`.
pub fn value_of(line: &str, key: &str) -> Option<String> {
    split_params(line).into_iter().find_map(|param| {
        let (k, v) = param.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_plain_and_quoted_params() {
        let line = r#"console=ttyS0 gi.exec="python3 -c 'import awslambdaric'" ro"#;
        assert_eq!(
            split_params(line),
            vec![
                "console=ttyS0",
                "gi.exec=python3 -c 'import awslambdaric'",
                "ro"
            ]
        );
    }

    #[test]
    fn finds_first_value() {
        let line = "a=1 b=2 a=3 flag\n";
        assert_eq!(value_of(line, "a").as_deref(), Some("1"));
        assert_eq!(value_of(line, "b").as_deref(), Some("2"));
        assert_eq!(value_of(line, "flag"), None);
        assert_eq!(value_of(line, "missing"), None);
    }

    #[test]
    fn empty_quoted_value_is_kept() {
        assert_eq!(value_of(r#"k="" x=1"#, "k").as_deref(), Some(""));
    }
}
