//! Form bodies and the errors shown next to their fields.

use keygate_domain::Error;

/// A `application/x-www-form-urlencoded` body, with repeated names (checkboxes) kept.
#[derive(Clone, Debug, Default)]
pub struct FormData(pub Vec<(String, String)>);

impl FormData {
    pub fn parse(body: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .unwrap_or("")
    }

    /// Every non-empty value of `name` (checked checkboxes).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// What went wrong with a submitted form: messages by field, and the rest for the form's top.
#[derive(Clone, Debug, Default)]
pub struct Errors {
    pub fields: Vec<(String, String)>,
    pub general: Vec<String>,
}

impl Errors {
    /// The app's refusal, spread over the form: a violation of a field the form has goes next
    /// to it (`access_schedule.starts_at` is the form's `starts_at`), anything else on top.
    pub fn of(e: &Error, fields: &[&str]) -> Self {
        let mut out = Self::default();
        match e {
            Error::InvalidArgument { violations } => {
                for v in violations {
                    let name = v.field.rsplit('.').next().unwrap_or(&v.field);
                    let name = name.split('[').next().unwrap_or(name);
                    if fields.contains(&name) {
                        out.fields.push((name.to_owned(), v.description.clone()));
                    } else if v.field.is_empty() {
                        out.general.push(v.description.clone());
                    } else {
                        out.general.push(format!("{}: {}", v.field, v.description));
                    }
                }
            }
            e => out.general.push(e.to_string()),
        }
        out
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.fields.push((field.to_owned(), message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.general.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_domain::FieldViolation;

    #[test]
    fn repeated_names_and_violations_by_field() {
        let f = FormData::parse(b"a=1&g=x&g=y&g=&name=+Jo+");
        assert_eq!(f.get("name"), "Jo");
        assert_eq!(f.all("g"), vec!["x", "y"]);
        assert_eq!(f.get("missing"), "");
        let e = Error::InvalidArgument {
            violations: vec![
                FieldViolation::new("access_schedule.starts_at", "is not a valid time"),
                FieldViolation::new("other", "bad"),
            ],
        };
        let errs = Errors::of(&e, &["starts_at"]);
        assert_eq!(errs.field("starts_at"), Some("is not a valid time"));
        assert_eq!(errs.general, vec!["other: bad"]);
    }
}
