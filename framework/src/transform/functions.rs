//! The normalizers as plain functions, for transforms written in Rust
//! (the [`super::Transform`] escape hatch): the same rules a `mapping:`
//! applies, so a hand-written transform and a declared one agree.

use std::borrow::Cow;

/// Trimmed, lower-cased and syntax-checked, or why it is not an address.
pub fn email(s: &str) -> Result<String, String> {
    super::normalize::email::email(Cow::Borrowed(s)).map(Cow::into_owned)
}

/// The number in E.164; `region` (`US`) reads numbers without a country
/// code. `Err` says why it is not a phone number.
pub fn phone_e164(s: &str, region: Option<&str>) -> Result<String, String> {
    let region = region.map(super::normalize::phone::region).transpose()?;
    super::normalize::phone::e164(s, region)
}

/// A person's name: `full` when it is not blank, else the non-blank parts
/// joined with single spaces; `None` when all are blank.
pub fn person_name(full: Option<&str>, parts: &[Option<&str>]) -> Option<String> {
    super::normalize::name::person_name(full, parts).map(Cow::into_owned)
}

/// ISO-8601 text as epoch milliseconds.
pub fn iso8601_millis(s: &str) -> Result<i64, String> {
    super::normalize::time::iso8601(s).map(|micros| micros.div_euclid(1000))
}
