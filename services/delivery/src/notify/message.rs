//! The words of an Instant Key delivery. Composed when the message is sent (or shown in the
//! outbox), from the key, its workspace and its person: nothing of it is stored.

use std::fmt::Write as _;

/// Who the message says it is from when the workspace has no name.
pub const DEFAULT_SENDER: &str = "Keygate";
/// Longest sender name in an SMS (a long workspace name would split the message).
const MAX_SMS_SENDER_CHARS: usize = 40;

/// What one message says, whichever channel carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    /// The workspace's name, or [`DEFAULT_SENDER`].
    pub sender: String,
    /// The person's name; empty when unknown.
    pub person: String,
    /// The key's link (derived, never stored).
    pub link: String,
    /// When the key works, as people read it ("from Tue 1 Dec 2026, 15:00 (Europe/Madrid)
    /// until ..."); empty when open-ended and already active.
    pub window: String,
}

/// An email: subject, plain text and HTML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The sender name from a workspace name.
pub fn sender_name(workspace_name: &str) -> String {
    let n = workspace_name.trim();
    if n.is_empty() {
        DEFAULT_SENDER.to_owned()
    } else {
        n.to_owned()
    }
}

/// "Your Instant Key from Hotel Bella: https://.../ik/..."
pub fn sms(c: &Content) -> String {
    let sender: String = c.sender.chars().take(MAX_SMS_SENDER_CHARS).collect();
    format!("Your Instant Key from {sender}: {}", c.link)
}

/// A short email with the link and the validity window.
pub fn email(c: &Content) -> Email {
    let subject = format!("Your Instant Key from {}", c.sender);
    let greeting = if c.person.trim().is_empty() {
        "Hello,".to_owned()
    } else {
        format!("Hello {},", c.person.trim())
    };
    let mut text = format!(
        "{greeting}\n\n{} sent you an Instant Key. Open this link on your phone to unlock your doors:\n\n{}\n\n",
        c.sender, c.link
    );
    if !c.window.is_empty() {
        let _ = writeln!(text, "It works {}.", c.window);
    }
    text.push_str(
        "Keep this link to yourself: anyone who has it can open your doors. If you did not expect it, ignore this email.\n",
    );
    const MUTED: &str = "font-size:.9em;color:#555";
    let html = maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            body style="font-family:system-ui,sans-serif;line-height:1.5;color:#111" {
                p { (greeting) }
                p { (c.sender) " sent you an Instant Key. Open it on your phone to unlock your doors:" }
                p {
                    a href=(c.link) style="display:inline-block;padding:.7em 1.2em;background:#1f4fd1;color:#fff;border-radius:8px;text-decoration:none;font-weight:600" {
                        "Open your Instant Key"
                    }
                }
                p style=(MUTED) { "Or copy this link: " a href=(c.link) { (c.link) } }
                @if !c.window.is_empty() {
                    p { "It works " (c.window) "." }
                }
                p style=(MUTED) {
                    "Keep this link to yourself: anyone who has it can open your doors. If you did not expect it, ignore this email."
                }
            }
        }
    }
    .into_string();
    Email {
        subject,
        text,
        html,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> Content {
        Content {
            sender: "Hotel <Bella>".into(),
            person: "Jane Doe".into(),
            link: "https://keys.example.com/ik/abc".into(),
            window: "from Tue 1 Dec 2026, 15:00 (UTC) until Fri 4 Dec 2026, 11:00 (UTC)".into(),
        }
    }

    #[test]
    fn the_sms_names_the_sender_and_carries_the_link() {
        assert_eq!(
            sms(&content()),
            "Your Instant Key from Hotel <Bella>: https://keys.example.com/ik/abc"
        );
        assert_eq!(sender_name("  "), "Keygate");
        let long = Content {
            sender: "x".repeat(100),
            ..content()
        };
        assert!(sms(&long).len() < 100 + 40);
    }

    #[test]
    fn the_email_has_the_link_the_window_and_escaped_names() {
        let e = email(&content());
        assert_eq!(e.subject, "Your Instant Key from Hotel <Bella>");
        assert!(e.text.contains("Hello Jane Doe,"));
        assert!(e.text.contains("https://keys.example.com/ik/abc"));
        assert!(e.text.contains("It works from Tue 1 Dec 2026"));
        assert!(e.html.contains("href=\"https://keys.example.com/ik/abc\""));
        assert!(e.html.contains("Hotel &lt;Bella&gt;"));
        assert!(!e.html.contains("<Bella>"));
    }
}
