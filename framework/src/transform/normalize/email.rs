//! `email`: trimmed, lower-cased, and checked with the `email_address`
//! crate's RFC 5322 syntax rules, tightened for data from people: a domain
//! with at least two labels (`x@localhost` is refused), no `[1.2.3.4]`
//! domain literals, no `Name <addr>` display text. Whether the mailbox
//! exists is not checked.

use super::text;
use email_address::{EmailAddress, Options};
use std::borrow::Cow;

const OPTIONS: Options = Options {
    minimum_sub_domains: 2,
    allow_domain_literal: false,
    allow_display_text: false,
    allow_long_local_parts: false,
};

/// The address, normalized, or why it is not one.
pub(crate) fn email(s: Cow<'_, str>) -> Result<Cow<'_, str>, String> {
    let s = text::lowercase(text::trim(s));
    match EmailAddress::parse_with_options(&s, OPTIONS) {
        Ok(_) => Ok(s),
        Err(e) => Err(format!(
            "not an email address: {} ({e})",
            crate::transform::value::quote(&s)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        email(Cow::Borrowed(s)).unwrap().into_owned()
    }

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        assert_eq!(
            ok("  Ada.Lovelace@Example.COM "),
            "ada.lovelace@example.com"
        );
        assert_eq!(
            ok("bob+crm@mail.example.co.uk"),
            "bob+crm@mail.example.co.uk"
        );
        assert_eq!(ok("o'brien@example.ie"), "o'brien@example.ie");
    }

    #[test]
    fn malformed_addresses_are_refused_quoting_the_value() {
        for bad in [
            "bob(at)x",
            "bob@",
            "@example.com",
            "bob@localhost",
            "bob@@example.com",
            "bob@exa mple.com",
            "bob@[127.0.0.1]",
            "Bob <bob@example.com>",
            "bob@-example.com",
            "bob@example..com",
            ".bob@example.com",
            "",
        ] {
            let e = email(Cow::Borrowed(bad)).expect_err(bad);
            assert!(e.starts_with("not an email address: \""), "{bad}: {e}");
        }
        assert!(email(Cow::Borrowed("bob(at)x"))
            .unwrap_err()
            .contains("\"bob(at)x\""));
    }
}
