//! `name`: a person's name from its parts. A non-blank full name wins (the
//! source's own formatting of it is usually the better one); otherwise the
//! non-blank parts are joined `first middle last`. Whitespace is trimmed and
//! collapsed; letter case is kept (`McDonald`, `van der Berg`).

use super::text::collapse;
use std::borrow::Cow;

/// The name, or None when every part is blank.
pub(crate) fn person_name<'a>(
    full: Option<&'a str>,
    parts: &[Option<&'a str>],
) -> Option<Cow<'a, str>> {
    if let Some(full) = full.map(collapse).filter(|f| !f.is_empty()) {
        return Some(full);
    }
    let mut words = parts
        .iter()
        .flatten()
        .map(|p| collapse(p))
        .filter(|p| !p.is_empty());
    let first = words.next()?;
    let Some(second) = words.next() else {
        return Some(first);
    };
    let mut out = String::with_capacity(first.len() + second.len() + 16);
    out.push_str(&first);
    for w in std::iter::once(second).chain(words) {
        out.push(' ');
        out.push_str(&w);
    }
    Some(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_joined_with_single_spaces() {
        assert_eq!(
            person_name(None, &[Some(" Ada "), Some(""), Some("Lovelace")]).unwrap(),
            "Ada Lovelace"
        );
        assert_eq!(
            person_name(None, &[Some("Mary"), Some("Ann  Q."), Some("de la Cruz")]).unwrap(),
            "Mary Ann Q. de la Cruz"
        );
        assert_eq!(
            person_name(None, &[None, None, Some("Prince")]).unwrap(),
            "Prince"
        );
    }

    #[test]
    fn a_full_name_wins_and_is_tidied() {
        assert_eq!(
            person_name(
                Some("  Dr.  Ada   Lovelace "),
                &[Some("Ada"), None, Some("L")]
            )
            .unwrap(),
            "Dr. Ada Lovelace"
        );
        assert_eq!(
            person_name(Some("   "), &[Some("Ada"), None, None]).unwrap(),
            "Ada",
            "a blank full name does not win"
        );
    }

    #[test]
    fn no_name_at_all_is_missing() {
        assert_eq!(person_name(None, &[None, Some(" "), Some("")]), None);
        assert_eq!(person_name(Some(""), &[]), None);
    }
}
