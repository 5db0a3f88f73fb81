//! Parsers for input values ("parse, don't validate"): each turns raw input into a value
//! the domain can trust, or into a message for the field that was wrong.

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

/// A required field: `None` becomes the field's error.
pub fn required<T>(value: Option<T>) -> Result<T, String> {
    value.ok_or_else(|| "is required".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
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
