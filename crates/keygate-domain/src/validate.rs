//! Input validation: parse raw request fields into domain values, collecting every bad field so
//! the caller learns about all of them in one `BadRequest`.

use std::str::FromStr;

use crate::error::{Error, FieldViolation, Resource};
use crate::model::{NewUserIdentity, UserIdentityPatch};

/// Longest name, key or display string we accept, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest `request_id`, in characters.
pub const MAX_REQUEST_ID_CHARS: usize = 100;

/// Collects field violations across a whole request.
#[derive(Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Records the error of `r` (if any) and returns its value.
    pub fn check<T>(&mut self, r: Result<T, FieldViolation>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(v) => {
                self.0.push(v);
                None
            }
        }
    }

    /// `Ok(())` when nothing was recorded, else `InvalidArgument` with every violation.
    pub fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument { violations: self.0 })
        }
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A required human name: trimmed, 1 to 200 characters, no control characters.
pub fn name(field: &str, raw: &str) -> Result<String, FieldViolation> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    if s.chars().count() > MAX_NAME_CHARS {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if has_control(s) {
        return Err(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(s.to_owned())
}

/// An optional text filter of a list (`user_identity_key`, `email_address`, `external_type`):
/// trimmed, empty means no filter, at most 254 characters, no control characters (PostgreSQL
/// text cannot even hold NUL, so such a filter could only fail in the store).
pub fn filter_text(field: &str, raw: &str) -> Result<Option<String>, FieldViolation> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > MAX_FILTER_CHARS {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {MAX_FILTER_CHARS} characters"),
        ));
    }
    if has_control(s) {
        return Err(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(Some(s.to_owned()))
}

/// The longest text filter of a list: the longest value such a field can hold (an email
/// address).
const MAX_FILTER_CHARS: usize = 254;

/// The filters of `ListUserIdentities` (and the Seam API's lookup by key).
pub fn user_identity_filter(
    user_identity_key: &str,
    email_address: &str,
) -> Result<crate::model::UserIdentityFilter, Error> {
    let mut v = Violations::default();
    let key = v.check(filter_text("user_identity_key", user_identity_key));
    let email = v.check(filter_text("email_address", email_address));
    v.finish()?;
    Ok(crate::model::UserIdentityFilter {
        user_identity_key: key.flatten(),
        email_address: email.flatten(),
    })
}

/// An optional name-like value: empty means absent.
pub fn optional_name(field: &str, raw: &str) -> Result<Option<String>, FieldViolation> {
    if raw.trim().is_empty() {
        Ok(None)
    } else {
        name(field, raw).map(Some)
    }
}

/// An optional email address: empty means absent. Deliberately simple (one `@`, a dotted
/// domain of letters, digits and hyphens, no spaces); the real check is that mail arrives.
pub fn email(field: &str, raw: &str) -> Result<Option<String>, FieldViolation> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || FieldViolation::new(field, "must be an email address like jane@example.com");
    if s.len() > 254 || has_control(s) || s.contains(char::is_whitespace) {
        return Err(bad());
    }
    let (local, domain) = s.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return Err(bad());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(bad());
    }
    Ok(Some(s.to_owned()))
}

/// An optional phone number in E.164 form (`+` then 2 to 15 digits, the first not 0).
pub fn phone_e164(field: &str, raw: &str) -> Result<Option<String>, FieldViolation> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let digits = s.strip_prefix('+').unwrap_or("");
    let ok = (2..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(Some(s.to_owned()))
    } else {
        Err(FieldViolation::new(
            field,
            "must be a phone number in E.164 form, like +15555551000",
        ))
    }
}

/// An optional idempotency key: empty means none.
pub fn request_id(raw: &str) -> Result<Option<String>, FieldViolation> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.chars().count() > MAX_REQUEST_ID_CHARS || has_control(raw) {
        return Err(FieldViolation::new(
            "request_id",
            format!("must be at most {MAX_REQUEST_ID_CHARS} printable characters"),
        ));
    }
    Ok(Some(raw.to_owned()))
}

/// A required resource id. Empty is `INVALID_ARGUMENT`; a value that is not a UUID cannot name
/// anything, so it is `NOT_FOUND` exactly like an id from another workspace.
pub fn id<T: FromStr>(field: &str, raw: &str, resource: Resource) -> Result<T, Error> {
    if raw.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    raw.parse()
        .map_err(|_| Error::not_found(resource, truncate(raw, 64)))
}

/// An optional id filter: empty means no filter.
pub fn optional_id<T: FromStr>(
    field: &str,
    raw: &str,
    resource: Resource,
) -> Result<Option<T>, Error> {
    if raw.is_empty() {
        Ok(None)
    } else {
        id(field, raw, resource).map(Some)
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Validates the fields of a new user identity.
pub fn new_user_identity(
    user_identity_key: &str,
    full_name: &str,
    email_address: &str,
    phone_number: &str,
) -> Result<NewUserIdentity, Error> {
    let mut v = Violations::default();
    let key = v.check(optional_name("user_identity_key", user_identity_key));
    let full_name = v.check(name("full_name", full_name));
    let email_address = v.check(email("email_address", email_address));
    let phone_number = v.check(phone_e164("phone_number", phone_number));
    v.finish()?;
    match (key, full_name, email_address, phone_number) {
        (Some(user_identity_key), Some(full_name), Some(email_address), Some(phone_number)) => {
            Ok(NewUserIdentity {
                user_identity_key,
                full_name,
                email_address,
                phone_number,
            })
        }
        _ => Err(Error::Internal {
            message: "validation accepted a field it did not return".into(),
        }),
    }
}

/// Validates a partial update; present-but-empty clears optional fields.
pub fn user_identity_patch(
    user_identity_key: Option<&str>,
    full_name: Option<&str>,
    email_address: Option<&str>,
    phone_number: Option<&str>,
) -> Result<UserIdentityPatch, Error> {
    let mut v = Violations::default();
    let patch = UserIdentityPatch {
        user_identity_key: user_identity_key
            .and_then(|k| v.check(optional_name("user_identity_key", k))),
        full_name: full_name.and_then(|n| v.check(name("full_name", n))),
        email_address: email_address.and_then(|e| v.check(email("email_address", e))),
        phone_number: phone_number.and_then(|p| v.check(phone_e164("phone_number", p))),
    };
    v.finish()?;
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_filters_refuse_what_the_store_cannot_hold() {
        // The fault suite's fuzzer sent `email_address: "\0"`: PostgreSQL refused the query
        // and the call was INTERNAL.
        for bad in ["\0", "a\0b", "jane\u{7}@example.com"] {
            let err = user_identity_filter("", bad).expect_err("control characters");
            assert_eq!(err.reason(), crate::ErrorReason::InvalidField, "{bad:?}");
            assert!(user_identity_filter(bad, "").is_err(), "{bad:?}");
            assert!(filter_text("external_type", bad).is_err(), "{bad:?}");
        }
        assert!(filter_text("external_type", &"x".repeat(255)).is_err());
        let f = user_identity_filter(" guest-1 ", "").expect("valid");
        assert_eq!(f.user_identity_key.as_deref(), Some("guest-1"));
        assert_eq!(f.email_address, None);
        assert_eq!(filter_text("external_type", "  "), Ok(None));
    }

    #[test]
    fn names() {
        assert_eq!(name("n", "  Jane Doe ").ok().as_deref(), Some("Jane Doe"));
        assert!(name("n", "   ").is_err());
        assert!(name("n", &"x".repeat(201)).is_err());
        assert!(name("n", &"é".repeat(200)).is_ok());
        assert!(name("n", "a\u{0}b").is_err());
    }

    #[test]
    fn emails() {
        assert!(matches!(email("e", ""), Ok(None)));
        assert!(email("e", "jane.doe@example.com").is_ok());
        for bad in [
            "jane",
            "jane@",
            "@example.com",
            "jane@example",
            "ja ne@example.com",
            "a@b@c.com",
            "jane@-x.com",
        ] {
            assert!(email("e", bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn phones() {
        assert!(phone_e164("p", "+15555551000").is_ok());
        assert!(matches!(phone_e164("p", ""), Ok(None)));
        for bad in [
            "15555551000",
            "+0555",
            "+1",
            "+1234567890123456",
            "+1555-555",
            "+",
        ] {
            assert!(phone_e164("p", bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn all_violations_reported_at_once() {
        let Err(Error::InvalidArgument { violations }) =
            new_user_identity("", "", "not-an-email", "555")
        else {
            panic!("expected InvalidArgument");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["full_name", "email_address", "phone_number"]);
    }

    #[test]
    fn ids() {
        use crate::ids::WorkspaceId;
        assert!(matches!(
            id::<WorkspaceId>("workspace_id", "", Resource::Workspace),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            id::<WorkspaceId>("workspace_id", "nope", Resource::Workspace),
            Err(Error::NotFound { .. })
        ));
        let w = WorkspaceId::new();
        assert_eq!(
            id::<WorkspaceId>("workspace_id", &w.to_string(), Resource::Workspace).ok(),
            Some(w)
        );
    }
}
