//! Times in forms: a `datetime-local` input is a wall-clock time without a zone, read in the
//! access system's time zone (shown next to the field); times on pages are shown in it too.

use time::OffsetDateTime;

fn zone(name: &str) -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get(name).unwrap_or(jiff::tz::TimeZone::UTC)
}

/// The zone name shown to people: the system's, or UTC when it has none Keygate knows.
pub fn zone_label(name: &str) -> &str {
    if jiff::tz::TimeZone::get(name).is_ok() {
        name
    } else {
        "UTC"
    }
}

/// A `datetime-local` value (`2026-12-05T16:30`, seconds optional) in zone `tz`; empty is
/// `None`.
pub fn parse_local(raw: &str, tz: &str) -> Result<Option<OffsetDateTime>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let dt: jiff::civil::DateTime = raw
        .parse()
        .map_err(|_| "is not a date and time (YYYY-MM-DDTHH:MM)".to_owned())?;
    let zoned = dt
        .to_zoned_datetime(zone(tz))
        .map_err(|_| format!("does not exist in {}", zone_label(tz)))?;
    OffsetDateTime::from_unix_timestamp(zoned.timestamp().as_second())
        .map(Some)
        .map_err(|_| "is out of range".to_owned())
}

/// A time as people read it, in zone `tz`.
pub fn show(t: OffsetDateTime, tz: &str) -> String {
    match jiff::Timestamp::from_second(t.unix_timestamp()) {
        Ok(ts) => ts
            .to_zoned_datetime(zone(tz))
            .strftime("%a %-d %b %Y, %H:%M")
            .to_string(),
        Err(_) => t.to_string(),
    }
}

/// A time as a `datetime-local` value in zone `tz` (to fill a form).
pub fn local_value(t: OffsetDateTime, tz: &str) -> String {
    match jiff::Timestamp::from_second(t.unix_timestamp()) {
        Ok(ts) => ts
            .to_zoned_datetime(zone(tz))
            .strftime("%Y-%m-%dT%H:%M")
            .to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_in_the_systems_zone() {
        let t = parse_local("2026-07-01T09:30", "Europe/Paris")
            .expect("parses")
            .expect("a time");
        assert_eq!(t.unix_timestamp(), 1_782_891_000);
        assert_eq!(local_value(t, "Europe/Paris"), "2026-07-01T09:30");
        assert_eq!(parse_local("", "UTC"), Ok(None));
        assert!(parse_local("tomorrow", "UTC").is_err());
    }
}
