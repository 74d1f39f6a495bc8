//! `phone`: a number in E.164 (`+14155550123`), parsed and validated with
//! the `phonenumber` crate (libphonenumber's rules and metadata). A number
//! written without a country code is read in the configured region; with
//! none configured it is refused. A number the metadata says cannot exist
//! (wrong length, unassigned range) is refused; extensions are dropped.

use phonenumber::country::Id;
use phonenumber::Mode;

/// The region given in config (`US`, `gb`), checked when the mapping compiles.
pub(crate) fn region(code: &str) -> Result<Id, String> {
    code.trim().to_ascii_uppercase().parse::<Id>().map_err(|_| {
        format!("`{code}` is not a region libphonenumber knows (ISO 3166-1 alpha-2, e.g. `US`)")
    })
}

/// The number in E.164, or why it is not a phone number.
pub(crate) fn e164(s: &str, region: Option<Id>) -> Result<String, String> {
    let bad = |why: &str| {
        let region = region.map_or(String::new(), |r| {
            format!(" (default region {})", r.as_ref())
        });
        format!(
            "not a valid phone number{region}: {}{why}",
            crate::transform::value::quote(s)
        )
    };
    let number = phonenumber::parse(region, s.trim()).map_err(|e| bad(&format!(": {e}")))?;
    if !phonenumber::is_valid(&number) {
        return Err(bad(""));
    }
    Ok(number.format().mode(Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_numbers_take_the_default_region() {
        let us = Some(region("US").unwrap());
        assert_eq!(e164("(415) 555-2671", us).unwrap(), "+14155552671");
        assert_eq!(e164(" 415.555.2671 ", us).unwrap(), "+14155552671");
        assert_eq!(e164("+44 20 7946 0958", us).unwrap(), "+442079460958");
        let gb = Some(region("gb").unwrap());
        assert_eq!(e164("020 7946 0958", gb).unwrap(), "+442079460958");
        assert_eq!(
            e164("+1 415 555 2671 ext. 12", None).unwrap(),
            "+14155552671"
        );
    }

    #[test]
    fn invalid_numbers_are_refused() {
        let us = Some(region("US").unwrap());
        for bad in ["555", "not a phone", "", "+1 123 456 7890", "+999 1234"] {
            let e = e164(bad, us).expect_err(bad);
            assert!(e.starts_with("not a valid phone number"), "{bad}: {e}");
        }
        let e = e164("415 555 2671", None).expect_err("no region");
        assert!(e.contains("\"415 555 2671\""), "{e}");
    }

    #[test]
    fn unknown_regions_are_refused() {
        assert!(region("XX").is_err());
        assert!(region("USA").is_err());
        assert!(region("de").is_ok());
    }
}
