//! Parsers for input values ("parse, don't validate"): each turns raw input into a value
//! the domain can trust, or into a message for the field that was wrong.

use rust_decimal::Decimal;

/// A syntactically plausible e-mail address, trimmed. Compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        let valid = s.len() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && match s.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && local.len() <= 64
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                }
                None => false,
            };
        if valid {
            Ok(EmailAddress(s.to_string()))
        } else {
            Err("must be a valid e-mail address".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Trimmed text of `min..=max` characters, without control characters.
pub fn text(raw: &str, min: usize, max: usize) -> Result<String, String> {
    let s = raw.trim();
    let len = s.chars().count();
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("must not contain control characters".into());
    }
    if len < min {
        return Err(if min == 1 {
            "must not be empty".into()
        } else {
            format!("must be at least {min} characters")
        });
    }
    if len > max {
        return Err(format!("must be at most {max} characters"));
    }
    Ok(s.to_string())
}

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;

/// A new password: long enough to matter, short enough not to be a hashing DoS.
pub fn new_password(raw: &str) -> Result<String, String> {
    let len = raw.chars().count();
    if len < MIN_PASSWORD_CHARS {
        Err(format!("must be at least {MIN_PASSWORD_CHARS} characters"))
    } else if len > MAX_PASSWORD_CHARS {
        Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"))
    } else {
        Ok(raw.to_string())
    }
}

/// A decimal of at most `max_int_digits` digits before the point and two after, written as
/// digits only (no sign, exponent or separators): `"2500000"`, `"2500000.5"`, `"2500000.50"`.
fn decimal2(raw: &str, max_int_digits: usize) -> Result<Decimal, String> {
    let s = raw.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let shaped = !int.is_empty()
        && int.len() <= max_int_digits
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 2
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (frac.is_empty() != s.contains('.'));
    if !shaped {
        return Err(format!(
            "must be a decimal string with at most {max_int_digits} digits and two decimal places, e.g. \"2500000.00\""
        ));
    }
    let mut d = Decimal::from_str_exact(s).map_err(|e| e.to_string())?;
    d.rescale(2);
    Ok(d)
}

/// An amount of money: a non-negative decimal with two places, stored as NUMERIC and
/// written as a string (`"2500000.00"`), never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money(Decimal);

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);

    pub fn parse(raw: &str) -> Result<Self, String> {
        decimal2(raw, 12).map(Money)
    }

    /// A strictly positive amount, such as a payment.
    pub fn parse_positive(raw: &str) -> Result<Self, String> {
        Self::parse(raw).and_then(|m| {
            if m.0.is_zero() {
                Err("must be more than 0".into())
            } else {
                Ok(m)
            }
        })
    }

    pub fn from_decimal(d: Decimal) -> Self {
        let mut d = d;
        d.rescale(2);
        Money(d)
    }

    pub fn decimal(self) -> Decimal {
        self.0
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

impl serde::Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An area in square metres: positive, two decimal places.
pub fn area(raw: &str) -> Result<Decimal, String> {
    let d = decimal2(raw, 10)?;
    if d.is_zero() {
        Err("must be more than 0".into())
    } else {
        Ok(d)
    }
}

/// A required field: `None` becomes the field's error.
pub fn required<T>(value: Option<T>) -> Result<T, String> {
    value.ok_or_else(|| "is required".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_a_two_place_decimal_string() {
        assert_eq!(Money::parse("2500000").unwrap().to_string(), "2500000.00");
        assert_eq!(Money::parse(" 12.5 ").unwrap().to_string(), "12.50");
        assert_eq!(Money::parse("0.07").unwrap().to_string(), "0.07");
        for bad in [
            "",
            "-1",
            "1.234",
            "1e3",
            "1,000",
            "1.",
            ".5",
            "+3",
            "NaN",
            "1 000",
            "9999999999999",
        ] {
            assert!(Money::parse(bad).is_err(), "{bad}");
        }
        assert!(Money::parse_positive("0.00").is_err());
        assert!(area("0").is_err() && area("450.5").is_ok());
    }

    proptest! {
        #[test]
        fn money_round_trips_through_its_text(cents in 0u64..100_000_000_000_000) {
            let m = Money::from_decimal(Decimal::new(cents as i64, 2));
            prop_assert_eq!(Money::parse(&m.to_string()).unwrap(), m);
        }
    }
    use proptest::prelude::*;

    #[test]
    fn emails() {
        for ok in ["a@b.co", "  Jane.Doe+x@Example.com ", "x@sub.domain.org"] {
            assert!(EmailAddress::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@@b.co", "a b@c.co", "a@.co", "a@co.",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_bounds() {
        assert_eq!(text("  hi ", 1, 5).unwrap(), "hi");
        assert!(text("   ", 1, 5).is_err());
        assert!(text("abcdef", 1, 5).is_err());
        assert!(text("a\u{0}b", 0, 5).is_err());
    }

    proptest! {
        #[test]
        fn parsed_text_always_respects_its_bounds(s in any::<String>(), min in 0usize..5, extra in 0usize..50) {
            let max = min + extra;
            if let Ok(t) = text(&s, min, max) {
                let n = t.chars().count();
                prop_assert!(n >= min && n <= max);
                prop_assert_eq!(t.trim(), t.as_str());
            }
        }

        #[test]
        fn parsed_emails_have_one_at_and_no_spaces(s in "\\PC{0,40}") {
            if let Ok(e) = EmailAddress::parse(&s) {
                prop_assert_eq!(e.as_str().matches('@').count(), 1);
                prop_assert!(!e.as_str().contains(' '));
            }
        }
    }
}
