//! Payload locations, parsed once when the mapping compiles: a JSON pointer
//! (`/address/city`, `/tags/0`, RFC 6901 escapes `~0` and `~1`) or a dotted
//! path (`address.city`, `tags.0`). A segment reads an object's key, or an
//! array's item when it is a number. Errors always show the pointer form.

use serde_json::Value as Json;
use std::fmt;

/// A compiled location in a JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    segments: Vec<Segment>,
    pointer: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    key: String,
    index: Option<usize>,
}

impl Path {
    /// Parses a JSON pointer (starts with `/`) or a dotted path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let keys: Vec<String> = if let Some(pointer) = text.strip_prefix('/') {
            pointer.split('/').map(unescape).collect::<Result<_, _>>()?
        } else if text.is_empty() {
            return Err(
                "an empty path; write a JSON pointer (`/a/b`) or a dotted path (`a.b`)".into(),
            );
        } else {
            let keys: Vec<String> = text.split('.').map(str::to_owned).collect();
            if keys.iter().any(String::is_empty) {
                return Err(format!(
                    "`{text}` has an empty segment; a key with a dot needs a JSON pointer (`/a.b`)"
                ));
            }
            keys
        };
        let pointer = keys.iter().fold(String::new(), |mut acc, k| {
            acc.push('/');
            acc.push_str(&k.replace('~', "~0").replace('/', "~1"));
            acc
        });
        let segments = keys
            .into_iter()
            .map(|key| Segment {
                index: index(&key),
                key,
            })
            .collect();
        Ok(Self { segments, pointer })
    }

    /// The value at this location, if the payload has one there.
    #[inline]
    pub fn get<'a>(&self, root: &'a Json) -> Option<&'a Json> {
        let mut here = root;
        for s in &self.segments {
            here = match here {
                Json::Object(map) => map.get(&s.key)?,
                Json::Array(items) => items.get(s.index?)?,
                _ => return None,
            };
        }
        Some(here)
    }

    /// The JSON pointer form, as errors show it.
    pub fn pointer(&self) -> &str {
        &self.pointer
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pointer)
    }
}

fn unescape(segment: &str) -> Result<String, String> {
    if !segment.contains('~') {
        return Ok(segment.to_owned());
    }
    let mut out = String::with_capacity(segment.len());
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => {
                    return Err(format!(
                        "`{segment}`: `~` must be followed by 0 (`~`) or 1 (`/`) in a JSON pointer"
                    ))
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// An array index per RFC 6901: digits, no leading zero (but `0` itself).
fn index(key: &str) -> Option<usize> {
    let digits = !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit());
    if !digits || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    key.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_and_dotted_paths_reach_the_same_value() {
        let doc = json!({"a": {"b": [10, {"c": "x"}]}, "k/y": 1, "t~": 2, "0": "zero"});
        for p in ["/a/b/1/c", "a.b.1.c"] {
            assert_eq!(Path::parse(p).unwrap().get(&doc), Some(&json!("x")), "{p}");
        }
        assert_eq!(Path::parse("/k~1y").unwrap().get(&doc), Some(&json!(1)));
        assert_eq!(Path::parse("/t~0").unwrap().get(&doc), Some(&json!(2)));
        assert_eq!(Path::parse("0").unwrap().get(&doc), Some(&json!("zero")));
        assert_eq!(Path::parse("a.b.0").unwrap().pointer(), "/a/b/0");
        assert_eq!(
            Path::parse("k/y").unwrap().pointer(),
            "/k~1y",
            "a dotted key may hold `/`"
        );
        assert_eq!(Path::parse("k/y").unwrap().get(&doc), Some(&json!(1)));
    }

    #[test]
    fn absent_locations_are_none_not_errors() {
        let doc = json!({"a": {"b": [1]}, "s": "text"});
        for p in ["/x", "/a/b/5", "/a/b/01", "/a/b/-1", "/s/0", "a.b.0.c"] {
            assert_eq!(Path::parse(p).unwrap().get(&doc), None, "{p}");
        }
    }

    #[test]
    fn malformed_paths_are_refused() {
        for p in ["", "a..b", ".a", "a.", "/a~2", "/a~"] {
            assert!(Path::parse(p).is_err(), "{p}");
        }
    }
}
