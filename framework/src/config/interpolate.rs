//! Environment variables in the config text, as Vector and docker-compose
//! do it: `${NAME}` or `${NAME:-default}`, replaced before the YAML is
//! parsed; `$${` is a literal `${`. `${env:NAME}` and `${file:PATH}` are left
//! alone: they are secrets, resolved where they are used and never printed.

use std::collections::HashMap;

/// Replaces `${NAME}` and `${NAME:-default}` in `text`. An unset variable
/// without a default is an error naming it and its line.
pub fn interpolate(text: &str, env: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(body_start) = tail.strip_prefix("${") else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let Some(close) = body_start.find('}') else {
            out.push_str("${");
            rest = body_start;
            continue;
        };
        let body = &body_start[..close];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        let is_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !is_name {
            // `${env:...}`, `${file:...}` or something else: not ours.
            out.push_str("${");
            rest = body_start;
            continue;
        }
        match (env.get(name), default) {
            (Some(v), _) => out.push_str(v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                let line = text[..text.len() - tail.len()].matches('\n').count() + 1;
                return Err(format!(
                    "line {line}: environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
                ));
            }
        }
        rest = &body_start[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([("HOST".to_owned(), "10.0.0.1:9092".to_owned())])
    }

    #[test]
    fn variables_and_defaults_are_replaced() {
        let text = "a: ${HOST}\nb: ${PORT:-8089}\nc: http://${HOST}/x\n";
        assert_eq!(
            interpolate(text, &env()).expect("ok"),
            "a: 10.0.0.1:9092\nb: 8089\nc: http://10.0.0.1:9092/x\n"
        );
    }

    #[test]
    fn secrets_escapes_and_lone_dollars_are_left_alone() {
        let text = "p: ${env:PASSWORD}\nf: ${file:/run/s}\nq: $${HOST}\nr: costs $5\n";
        assert_eq!(
            interpolate(text, &env()).expect("ok"),
            "p: ${env:PASSWORD}\nf: ${file:/run/s}\nq: ${HOST}\nr: costs $5\n"
        );
    }

    #[test]
    fn a_missing_variable_names_itself_and_its_line() {
        let e = interpolate("a: 1\nb: ${NOPE}\n", &env()).expect_err("unset");
        assert!(e.contains("line 2") && e.contains("NOPE"), "{e}");
    }
}
