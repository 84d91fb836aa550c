//! The one rule for a vendor adapter's `endpoint` setting: an `https://host[:port]` URL (plain
//! `http` only to a loopback host, for simulators and fakes), with no credentials, path, query
//! or fragment. Refusals are `invalid_connection_settings: endpoint: ...`.

use std::net::IpAddr;

use url::Url;

use crate::ProviderError;

/// The prefix every refused setting's message begins with.
pub const INVALID_CONNECTION_SETTINGS: &str = "invalid_connection_settings";

/// A refused setting, named, its value never shown.
pub fn invalid_setting(name: &str, why: &str) -> ProviderError {
    ProviderError::Permanent(format!("{INVALID_CONNECTION_SETTINGS}: {name}: {why}"))
}

/// Checks `raw` (trimmed) as a vendor endpoint and returns it parsed, with whether its host is
/// loopback.
pub fn vendor_endpoint(raw: &str) -> Result<(Url, bool), ProviderError> {
    vendor_url("endpoint", raw, false)
}

/// Checks the setting `name` as an `https://` URL (plain `http` only to a loopback host), without
/// credentials, query or fragment, and without a path unless `with_path` (a vendor whose API
/// base or token URL has one). Returns it parsed, with whether its host is loopback.
pub fn vendor_url(name: &str, raw: &str, with_path: bool) -> Result<(Url, bool), ProviderError> {
    let url = Url::parse(raw.trim()).map_err(|_| invalid_setting(name, "not a URL"))?;
    let host = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid_setting(name, "no host"))?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(invalid_setting(
                name,
                "plain http is allowed only to a loopback host; use https",
            ));
        }
        _ => return Err(invalid_setting(name, "the scheme must be https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid_setting(name, "must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid_setting(
            name,
            "must not carry a query or a fragment",
        ));
    }
    if !with_path && !matches!(url.path(), "" | "/") {
        return Err(invalid_setting(
            name,
            "must be scheme://host[:port], without a path",
        ));
    }
    Ok((url, loopback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for ok in [
            "https://api.kisi.io",
            "https://connect.getseam.com/",
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            assert!(vendor_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "not a url",
            "http://example.com",
            "ftp://127.0.0.1",
            "https://user:pw@example.com",
            "https://example.com/v1",
            "https://example.com/?q=1",
        ] {
            let e = vendor_endpoint(bad).expect_err(bad);
            assert!(
                e.to_string()
                    .contains("invalid_connection_settings: endpoint"),
                "{e}"
            );
            assert!(!e.to_string().contains("pw"), "{e}");
        }
    }
}
