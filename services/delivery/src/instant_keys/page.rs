//! The HTML of the Instant Key page: server-rendered, mobile first, no script needed. Rendered
//! with `maud`, whose templates escape every value (a person's name is caller input); the one
//! unescaped piece is the page's own constant stylesheet, whose hash the CSP allows.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use time::OffsetDateTime;

use keygate_app::doors::Door;

/// `t` in the access system's time zone, as "Tue 1 Dec 2026, 19:30 (Europe/Madrid)".
pub fn local_time(t: OffsetDateTime, zone: &str) -> String {
    let Ok(ts) = jiff::Timestamp::from_second(t.unix_timestamp()) else {
        return t.to_string();
    };
    let (tz, label) = match jiff::tz::TimeZone::get(zone) {
        Ok(tz) => (tz, zone),
        Err(_) => (jiff::tz::TimeZone::UTC, "UTC"),
    };
    format!(
        "{} ({label})",
        ts.to_zoned_datetime(tz).strftime("%a %-d %b %Y, %H:%M")
    )
}

/// The Content-Security-Policy of every page response: nothing loads but the page's own style
/// (allowed by its hash, so no inline style or script can be injected), images of this origin
/// (the QR code), and forms posting back to this origin; no framing, no `<base>`.
pub fn content_security_policy() -> &'static str {
    static POLICY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use base64::Engine as _;
        use sha2::Digest as _;
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    });
    &POLICY
}

const STYLE: &str = "
:root{--brand:#1f4fd1;color-scheme:light dark}
*{box-sizing:border-box}
body{margin:0;font:17px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f4f6fb;color:#111}
@media (prefers-color-scheme:dark){body{background:#111418;color:#eee}.card{background:#1b2027!important;border-color:#2c333d!important}}
main{max-width:30rem;margin:0 auto;padding:1.25rem}
h1{font-size:1.5rem;margin:.25rem 0 1rem}
.card{background:#fff;border:1px solid #dde2ec;border-radius:14px;padding:1rem;margin:0 0 .9rem}
.door h2{font-size:1.15rem;margin:0 0 .35rem}
.muted{color:#5b6472;font-size:.95rem;margin:.2rem 0}
button{width:100%;min-height:3rem;font-size:1.1rem;font-weight:600;border:0;border-radius:10px;background:var(--brand);color:#fff;margin-top:.6rem;cursor:pointer}
button:focus-visible{outline:3px solid #ffbf47;outline-offset:2px}
.status{border-radius:10px;padding:.8rem 1rem;margin:0 0 1rem;font-weight:600}
.ok{background:#dff5e3;color:#0d4a1c}.err{background:#fde4e4;color:#6b0d0d}
.code{font:700 1.6rem/1 ui-monospace,Menlo,monospace;letter-spacing:.2em}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
";

fn shell(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                meta name="referrer" content="no-referrer";
                meta name="robots" content="noindex";
                title { (title) }
                // A constant of this file (never input), allowed by its hash in the CSP.
                style { (PreEscaped(STYLE)) }
            }
            body { main { (body) } }
        }
    }
    .into_string()
}

/// A page that says why the key does not work.
pub fn refusal(title: &str, message: &str) -> String {
    shell(
        title,
        html! {
            h1 { (title) }
            div.card role="alert" { p { (message) } }
        },
    )
}

/// The outcome of an unlock, shown above the doors.
pub enum Outcome {
    Unlocked(String),
    Failed(String, String),
    /// Still queued or running; the door opens within this many seconds of the tap, or not at
    /// all (the unlock deadline).
    Pending(String, u64),
}

/// The key's page: the person's name, each door with its window and an Unlock button where the
/// system can unlock remotely (or what works instead), and the last outcome. On a device that
/// has not claimed the key (`claimed` false: a first visit, or a link previewer), a "Use this
/// key on this phone" button claims it, and PIN codes stay hidden until it does; an Unlock
/// button claims it too.
pub fn key_page(
    token: &str,
    person: &str,
    doors: &[Door],
    outcome: Option<Outcome>,
    claimed: bool,
    now: OffsetDateTime,
) -> String {
    let body = html! {
        h1 { "Hello, " (person) }
        p.muted { "Your Instant Key opens these doors." }
        // A live region, so a screen reader announces the outcome of an unlock.
        div aria-live="polite" {
            @match &outcome {
                Some(Outcome::Unlocked(name)) => {
                    p.status.ok role="status" { (name) " is unlocked." }
                }
                Some(Outcome::Failed(name, why)) => {
                    p.status.err role="alert" { "Could not unlock " (name) ": " (why) }
                }
                Some(Outcome::Pending(name, deadline)) => {
                    p.status role="status" {
                        "Still unlocking " (name) "… reload in a moment. If it has not opened "
                        (deadline) " seconds after your tap, it will not open: try again."
                    }
                }
                None => {}
            }
        }
        @if !claimed {
            section.card aria-labelledby="claim" {
                h2 #claim { "Use this key on this phone" }
                p.muted {
                    "This key works only on the devices that choose to use it, so keep it on the phone you will open the doors with."
                }
                form method="post" action={ "/ik/" (token) "/claim" } {
                    button type="submit" { "Use this key on this phone" }
                }
            }
        }
        @if doors.is_empty() {
            div.card { p { "No door is ready for this key yet. Try again in a minute." } }
        }
        @for d in doors {
            (door(token, d, claimed, now))
        }
    };
    shell("Your Instant Key", body)
}

/// One door of the key's page.
fn door(token: &str, d: &Door, claimed: bool, now: OffsetDateTime) -> Markup {
    let zone = &d.system.time_zone;
    let window = match d.ends_at {
        Some(e) => format!(
            "From {} until {}",
            local_time(d.starts_at, zone),
            local_time(e, zone)
        ),
        None => format!("From {}", local_time(d.starts_at, zone)),
    };
    let heading = format!("d-{}", d.entrance_id);
    html! {
        section.card.door aria-labelledby=(heading) {
            h2 id=(heading) { (d.name) }
            p.muted { (d.system.name) }
            p.muted { (window) }
            @if d.starts_at > now {
                p { "This key becomes active on " (local_time(d.starts_at, zone)) "." }
            } @else if d.remote {
                form method="post" action={ "/ik/" (token) "/unlock" } {
                    input type="hidden" name="acs_entrance_id" value=(d.entrance_id);
                    button type="submit" { "Unlock" span.sr { " " (d.name) } }
                }
            } @else if d.code.is_some() && !claimed {
                p {
                    "This door opens with a PIN on its keypad. Tap \u{201c}Use this key on this phone\u{201d} above to see it."
                }
            } @else if let Some(code) = &d.code {
                p { "This door cannot be opened from here. Enter your PIN on its keypad:" }
                p.code aria-label={ "PIN " (code.chars().map(String::from).collect::<Vec<_>>().join(" ")) } {
                    (code)
                }
            } @else {
                p {
                    "This door cannot be opened from here: hold your phone to the lock, with your mobile key app open."
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        let page = refusal("Nope", "<script>alert(1)</script>");
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        let page = key_page(
            "tok\"en",
            "<b>\"Jo\" & Al</b>",
            &[],
            Some(Outcome::Failed("<i>Door</i>".into(), "a \"b\"".into())),
            false,
            OffsetDateTime::UNIX_EPOCH,
        );
        assert!(
            page.contains("Hello, &lt;b&gt;&quot;Jo&quot; &amp; Al&lt;/b&gt;"),
            "{page}"
        );
        assert!(page.contains("Could not unlock &lt;i&gt;Door&lt;/i&gt;: a &quot;b&quot;"));
        assert!(page.contains("action=\"/ik/tok&quot;en/claim\""), "{page}");
        assert!(!page.contains("<b>") && !page.contains("<i>"));
    }

    #[test]
    fn the_style_is_the_one_the_policy_allows() {
        let page = refusal("Nope", "gone");
        assert!(page.contains(&format!("<style>{STYLE}</style>")));
        assert!(content_security_policy().contains("style-src 'sha256-"));
    }

    #[test]
    fn times_show_in_the_site_zone() {
        let t = OffsetDateTime::from_unix_timestamp(1_780_000_000).expect("time");
        let madrid = local_time(t, "Europe/Madrid");
        assert!(madrid.ends_with("(Europe/Madrid)"), "{madrid}");
        assert_ne!(madrid, local_time(t, "America/New_York"));
        assert!(local_time(t, "Not/AZone").ends_with("(UTC)"));
    }
}
