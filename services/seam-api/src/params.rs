//! A request's parameters, wherever they came from: a JSON body (`POST`, `PATCH`, `PUT`) or a
//! query string (`GET`, `DELETE`) as `@seamapi/url-search-params-serializer` writes it:
//! `name=value`, an array as the name repeated (`ids=a&ids=b`), an empty array or a null as
//! an empty value (`ids=`), a nested object as dotted names (`user_identity.full_name=Jane`).
//! Query values are all text; each handler reads a parameter with the type its schema gives it
//! ([`Params::string`], [`Params::strings`], [`Params::int`], ...), which coerces text.
//!
//! `_strict=true` (the SDKs add it to every query string) makes parameters the route does not
//! read an `invalid_input` error, as Seam's API does; without it they are ignored.

use std::collections::BTreeSet;

use keygate_domain::{Error, FieldViolation};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Most parameters one request may carry (a bound on what a query string can make us build).
const MAX_PARAMS: usize = 200;
/// Deepest dotted nesting accepted in a query string.
const MAX_DEPTH: usize = 4;

/// The parameters of one request, and which of them the route read.
#[derive(Debug)]
pub struct Params {
    map: Map<String, Value>,
    /// Values came from a query string: text, to be coerced.
    from_query: bool,
    read: BTreeSet<String>,
    pub strict: bool,
}

fn bad(field: &str, description: impl Into<String>) -> Error {
    Error::InvalidArgument {
        violations: vec![FieldViolation::new(field, description)],
    }
}

impl Params {
    /// Parameters of a JSON body; an empty body is no parameters.
    pub fn from_json(body: &[u8]) -> Result<Self, Error> {
        let map = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err(bad("_body", "the body must be a JSON object")),
                Err(e) => return Err(bad("_body", format!("the body is not JSON: {e}"))),
            }
        };
        Ok(Self {
            map,
            from_query: false,
            read: BTreeSet::new(),
            strict: false,
        })
    }

    /// Parameters of a query string (without the `?`). `_strict` is taken out of them.
    pub fn from_query(query: &str) -> Result<Self, Error> {
        let mut map = Map::new();
        let mut strict = false;
        let mut count = 0usize;
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name == "_strict" {
                strict = value == "true";
                continue;
            }
            count += 1;
            if count > MAX_PARAMS {
                return Err(bad("_query", format!("at most {MAX_PARAMS} parameters")));
            }
            let path: Vec<&str> = name.split('.').collect();
            if path.len() > MAX_DEPTH || path.iter().any(|p| p.is_empty()) {
                return Err(bad(&name, "is not a parameter name"));
            }
            insert(&mut map, &path, value.into_owned()).map_err(|()| {
                bad(
                    &name,
                    "is given both as a value and as an object with dotted names",
                )
            })?;
        }
        Ok(Self {
            map,
            from_query: true,
            read: BTreeSet::new(),
            strict,
        })
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.read.insert(key.to_owned());
        self.map.get(key).cloned()
    }

    /// Whether the parameter was given at all (even as null).
    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// A text parameter; absent, null (or empty in a query) is `None`.
    pub fn string(&mut self, key: &str) -> Result<Option<String>, Error> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if self.from_query && s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(key, "must be a string")),
        }
    }

    /// A required text parameter.
    pub fn required(&mut self, key: &str) -> Result<String, Error> {
        self.string(key)?.ok_or_else(|| bad(key, "is required"))
    }

    /// A list of text; absent or null is empty; a single query value is a list of one.
    pub fn strings(&mut self, key: &str) -> Result<Vec<String>, Error> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) if self.from_query => {
                Ok(if s.is_empty() { Vec::new() } else { vec![s] })
            }
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(bad(key, "must be an array of strings")),
                })
                .collect(),
            Some(_) => Err(bad(key, "must be an array of strings")),
        }
    }

    /// A whole number; text in a query string is parsed.
    pub fn int(&mut self, key: &str) -> Result<Option<i64>, Error> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if self.from_query => {
                if s.is_empty() {
                    return Ok(None);
                }
                // `limit` is a float in some of Seam's schemas: "10" and "10.0" both parse.
                s.parse::<i64>()
                    .ok()
                    .or_else(|| {
                        s.parse::<f64>()
                            .ok()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                            .map(|f| f as i64)
                    })
                    .map(Some)
                    .ok_or_else(|| bad(key, "must be a number"))
            }
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                        .map(|f| f as i64)
                })
                .map(Some)
                .ok_or_else(|| bad(key, "must be a whole number")),
            Some(_) => Err(bad(key, "must be a number")),
        }
    }

    /// A time in RFC 3339 (`2025-08-01T15:00:00.000Z`).
    pub fn time(&mut self, key: &str) -> Result<Option<OffsetDateTime>, Error> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => OffsetDateTime::parse(&s, &Rfc3339)
                .map(Some)
                .map_err(|_| bad(key, "must be a date and time in ISO 8601 (RFC 3339)")),
        }
    }

    /// An object parameter (a JSON object, or dotted names in a query string).
    pub fn object(&mut self, key: &str) -> Result<Option<Map<String, Value>>, Error> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(bad(key, "must be an object")),
        }
    }

    /// An array of objects (JSON bodies only: a query string cannot carry one).
    pub fn objects(&mut self, key: &str) -> Result<Vec<Map<String, Value>>, Error> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(m) => Ok(m),
                    _ => Err(bad(key, format!("item {i} must be an object"))),
                })
                .collect(),
            Some(_) => Err(bad(key, "must be an array of objects")),
        }
    }

    /// Marks parameters as known without using them (documented but not applicable here).
    pub fn ignore(&mut self, keys: &[&str]) {
        for k in keys {
            self.read.insert((*k).to_owned());
        }
    }

    /// In strict mode, the parameters the route did not read are an error.
    pub fn finish(&self) -> Result<(), Error> {
        if !self.strict {
            return Ok(());
        }
        let violations: Vec<FieldViolation> = self
            .map
            .keys()
            .filter(|k| !self.read.contains(*k))
            .map(|k| FieldViolation::new(k, "is not a parameter of this route"))
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument { violations })
        }
    }
}

/// Puts `value` at the dotted `path`; a name repeated makes an array.
fn insert(map: &mut Map<String, Value>, path: &[&str], value: String) -> Result<(), ()> {
    let Some((first, rest)) = path.split_first() else {
        return Err(());
    };
    if rest.is_empty() {
        match map.get_mut(*first) {
            None => {
                map.insert((*first).to_owned(), Value::String(value));
            }
            Some(Value::Array(items)) => items.push(Value::String(value)),
            Some(Value::String(prev)) => {
                let prev = std::mem::take(prev);
                map.insert(
                    (*first).to_owned(),
                    Value::Array(vec![Value::String(prev), Value::String(value)]),
                );
            }
            Some(_) => return Err(()),
        }
        return Ok(());
    }
    let entry = map
        .entry((*first).to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    match entry {
        Value::Object(inner) => insert(inner, rest, value),
        _ => Err(()),
    }
}

/// A string field of an object parameter (`user_identity.full_name`): text or null.
pub fn field(obj: &Map<String, Value>, parent: &str, key: &str) -> Result<Option<String>, Error> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(&format!("{parent}.{key}"), "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_as_the_sdks_write_them() {
        let mut p = Params::from_query(
            "acs_entrance_ids=a&acs_entrance_ids=b&empty=&limit=10&user_identity.full_name=Jane+Doe&user_identity.email_address=j%40x.io&one=x&_strict=true",
        )
        .expect("parses");
        assert!(p.strict);
        assert_eq!(p.strings("acs_entrance_ids").expect("list"), ["a", "b"]);
        assert!(p.strings("empty").expect("empty list").is_empty());
        assert_eq!(p.strings("one").expect("list of one"), ["x"]);
        assert_eq!(p.int("limit").expect("int"), Some(10));
        let u = p.object("user_identity").expect("obj").expect("present");
        assert_eq!(
            field(&u, "user_identity", "full_name").expect("str"),
            Some("Jane Doe".into())
        );
        assert_eq!(
            field(&u, "user_identity", "email_address").expect("str"),
            Some("j@x.io".into())
        );
        assert!(p.finish().is_ok(), "every parameter was read");
    }

    #[test]
    fn strict_mode_refuses_unknown_parameters_and_nulls_are_empty() {
        let mut p = Params::from_query("name=&other=1&_strict=true").expect("parses");
        assert_eq!(p.string("name").expect("null"), None);
        let Err(Error::InvalidArgument { violations }) = p.finish() else {
            panic!("strict refuses other");
        };
        assert_eq!(violations[0].field, "other");
        let mut lax = Params::from_query("other=1").expect("parses");
        assert_eq!(lax.string("name").expect("absent"), None);
        assert!(lax.finish().is_ok());
    }

    #[test]
    fn coercion_errors_name_the_field() {
        let mut p = Params::from_query("limit=ten").expect("parses");
        let Err(Error::InvalidArgument { violations }) = p.int("limit") else {
            panic!("not a number");
        };
        assert_eq!(violations[0].field, "limit");
        let mut j =
            Params::from_json(br#"{"limit": "10", "starts_at": "yesterday"}"#).expect("json");
        assert!(
            j.int("limit").is_err(),
            "JSON is typed: a string is not a number"
        );
        assert!(j.time("starts_at").is_err());
        assert!(Params::from_json(b"[1]").is_err());
        assert!(Params::from_json(b"").is_ok());
        assert!(Params::from_query("a=1&a.b=2").is_err());
    }
}
