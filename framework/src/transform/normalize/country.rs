//! `country`: an ISO 3166-1 code (alpha-2 `US` by default, or alpha-3
//! `USA`) from an alpha-2 or alpha-3 code, a numeric code (`840`), or an
//! English name or common alias (`United States`, `america`, `Great
//! Britain`), any letter case. The table is the `celes` crate's.

use crate::transform::config::CountryFormat;
use crate::transform::value::quote;
use celes::Country;
use std::str::FromStr;

/// The country `s` names, written as `format` asks.
pub(crate) fn country(s: &str, format: CountryFormat) -> Result<&'static str, String> {
    let c = lookup(s.trim()).ok_or_else(|| format!("not a country: {}", quote(s)))?;
    Ok(match format {
        CountryFormat::Alpha2 => c.alpha2,
        CountryFormat::Alpha3 => c.alpha3,
    })
}

fn lookup(s: &str) -> Option<Country> {
    let letters = s.bytes().all(|b| b.is_ascii_alphabetic());
    match s.len() {
        2 if letters => return Country::from_alpha2(s).ok(),
        3 if letters => return Country::from_alpha3(s).ok(),
        3 if s.bytes().all(|b| b.is_ascii_digit()) => return Country::from_code(s).ok(),
        0 => return None,
        _ => {}
    }
    // Names: celes keys them lower-case with no spaces or punctuation.
    let squashed: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_' | '.' | ',' | '\'' | '’' | '(' | ')'))
        .collect();
    Country::from_str(&squashed).ok().or_else(|| {
        let lower = squashed.to_lowercase();
        lower
            .strip_prefix("the")
            .and_then(|rest| Country::from_str(rest).ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a2(s: &str) -> Result<&'static str, String> {
        country(s, CountryFormat::Alpha2)
    }

    #[test]
    fn codes_and_names_become_alpha_2() {
        for (input, want) in [
            ("US", "US"),
            ("us", "US"),
            (" de ", "DE"),
            ("USA", "US"),
            ("gbr", "GB"),
            ("840", "US"),
            ("United States", "US"),
            ("united states of america", "US"),
            ("The United States of America", "US"),
            ("Germany", "DE"),
            ("United Kingdom", "GB"),
            ("Great Britain", "GB"),
            ("France", "FR"),
            ("South Korea", "KR"),
            ("New Zealand", "NZ"),
            ("U.S.", "US"),
        ] {
            assert_eq!(a2(input), Ok(want), "{input}");
        }
        assert_eq!(country("Germany", CountryFormat::Alpha3), Ok("DEU"));
    }

    #[test]
    fn unknown_countries_are_refused() {
        for bad in ["XX", "ZZZ", "999", "Atlantis", "", "12"] {
            let e = a2(bad).expect_err(bad);
            assert!(e.starts_with("not a country: "), "{e}");
        }
    }
}
