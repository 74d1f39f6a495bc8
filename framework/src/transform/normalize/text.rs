//! `trim`, `lowercase`, `uppercase`, and the whitespace tidying `name` uses.
//! Each borrows its input when there is nothing to change.

use std::borrow::Cow;

/// Leading and trailing whitespace removed.
pub(crate) fn trim(s: Cow<'_, str>) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
        Cow::Owned(o) if o.trim().len() == o.len() => Cow::Owned(o),
        Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
    }
}

/// Lower-cased (Unicode); borrowed when already lower-case.
pub(crate) fn lowercase(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.chars().any(char::is_uppercase) {
        Cow::Owned(s.to_lowercase())
    } else {
        s
    }
}

/// Upper-cased (Unicode); borrowed when already upper-case.
pub(crate) fn uppercase(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.chars().any(char::is_lowercase) {
        Cow::Owned(s.to_uppercase())
    } else {
        s
    }
}

/// Trimmed, with every run of whitespace inside made one space.
pub(crate) fn collapse(s: &str) -> Cow<'_, str> {
    let t = s.trim();
    let mut prev_space = false;
    let tidy = t.chars().all(|c| {
        let ok = !(c.is_whitespace() && (prev_space || c != ' '));
        prev_space = c.is_whitespace();
        ok
    });
    if tidy {
        return Cow::Borrowed(t);
    }
    let mut out = String::with_capacity(t.len());
    for word in t.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Cow<'_, str> {
        Cow::Borrowed(s)
    }

    #[test]
    fn trim_removes_edges_only_and_borrows() {
        assert_eq!(trim(b("  a b \n")), "a b");
        assert!(matches!(trim(b(" x ")), Cow::Borrowed("x")));
        assert_eq!(trim(Cow::Owned(" y ".into())), "y");
        assert_eq!(trim(b("   ")), "");
    }

    #[test]
    fn case_changes_are_unicode_and_lazy() {
        assert_eq!(lowercase(b("ÉMILE@X.COM")), "émile@x.com");
        assert!(matches!(lowercase(b("already")), Cow::Borrowed(_)));
        assert_eq!(uppercase(b("straße")), "STRASSE");
        assert!(matches!(uppercase(b("ABC 1")), Cow::Borrowed(_)));
    }

    #[test]
    fn collapse_tidies_inner_whitespace() {
        assert_eq!(collapse("  Ada \t  King\nLovelace "), "Ada King Lovelace");
        assert!(matches!(collapse(" Ada King "), Cow::Borrowed("Ada King")));
        assert_eq!(collapse(""), "");
    }
}
