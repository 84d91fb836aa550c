//! The outbox: where deliveries land when nothing may be sent (the embedded default, or
//! `KEYGATE_DELIVERY_OUTBOX=true`). The sender marks them sent with `sent_via = outbox`;
//! `keygate deliveries list` and `GET /outbox` show them, with the link derived again from the
//! key id for the reader (it is not stored).

use std::fmt::Write as _;

use keygate_domain::Error;
use keygate_domain::delivery::{Delivery, SentVia, Status};
use keygate_domain::ids::WorkspaceId;
use keygate_domain::instant_key::Links;
use keygate_store::Store;

/// Most rows a listing shows.
pub const MAX_ROWS: u32 = 500;

/// One delivery with its link, as a listing shows it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub delivery: Delivery,
    /// Derived from the key id for this listing.
    pub link: String,
}

/// Deliveries of `workspace` (or of all), newest first, at most `limit`, with their links.
pub async fn entries(
    store: &dyn Store,
    links: &Links,
    workspace: Option<WorkspaceId>,
    outbox_only: bool,
    limit: u32,
) -> Result<Vec<Entry>, Error> {
    let found = store
        .recent_key_deliveries(workspace, outbox_only, limit.min(MAX_ROWS))
        .await?;
    found
        .into_iter()
        .map(|d| {
            Ok(Entry {
                link: links.url(d.instant_key_id)?,
                delivery: d,
            })
        })
        .collect()
}

/// `sent (outbox)`, `sent`, `pending` or `failed`.
pub fn status_label(d: &Delivery) -> &'static str {
    match (d.status, d.sent_via) {
        (Status::Sent, Some(SentVia::Outbox)) => "sent (outbox)",
        (Status::Sent, _) => "sent",
        (Status::Pending, _) => "pending",
        (Status::Failed, _) => "failed",
    }
}

fn when(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// The listing as plain text, one delivery a line under a header (for the terminal).
pub fn text(entries: &[Entry]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<27}  {:<36}  {:<5}  {:<22}  {:<13}  {:>8}  LINK",
        "CREATED (UTC)", "DELIVERY", "CHAN", "TO", "STATUS", "ATTEMPTS"
    );
    for e in entries {
        let d = &e.delivery;
        let _ = writeln!(
            out,
            "{:<27}  {:<36}  {:<5}  {:<22}  {:<13}  {:>8}  {}",
            when(d.created_at),
            d.id,
            d.channel.as_str(),
            d.channel.mask(&d.to),
            status_label(d),
            d.attempts,
            e.link
        );
        if let Some(err) = &d.last_error {
            let _ = writeln!(
                out,
                "{:<27}  last error: {}",
                "",
                super::redact(err, &d.to, &d.channel.mask(&d.to))
            );
        }
    }
    if entries.is_empty() {
        out.push_str("(no deliveries)\n");
    }
    out
}

/// The outbox page: what would have been sent, newest first. `scope` says whose it is.
pub fn html(entries: &[Entry], scope: &str) -> String {
    const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:1.5rem;color:#111}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #dde2ec;vertical-align:top}\
td:last-child{word-break:break-all}.muted{color:#5b6472}";
    maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { "Keygate outbox" }
                // A constant of this file, never input.
                style { (maud::PreEscaped(STYLE)) }
            }
            body { main {
                h1 { "Outbox" }
                p.muted {
                    "Instant Key deliveries of " (scope) ", newest first. Nothing here was sent: this server has no SMS or email sender (or "
                    code { "KEYGATE_DELIVERY_OUTBOX=true" }
                    "). Each link opens doors; treat this page as a secret."
                }
                table {
                    thead { tr {
                        th scope="col" { "Created (UTC)" }
                        th scope="col" { "Channel" }
                        th scope="col" { "To" }
                        th scope="col" { "Status" }
                        th scope="col" { "Link" }
                    } }
                    tbody {
                        @for e in entries {
                            tr {
                                td { (when(e.delivery.created_at)) }
                                td { (e.delivery.channel.as_str()) }
                                td { (e.delivery.channel.mask(&e.delivery.to)) }
                                td { (status_label(&e.delivery)) }
                                td { a href=(e.link) rel="noreferrer" { (e.link) } }
                            }
                        }
                        @if entries.is_empty() {
                            tr { td colspan="5" { "Nothing in the outbox yet." } }
                        }
                    }
                }
            } }
        }
    }
    .into_string()
}

#[cfg(test)]
mod tests {
    use keygate_domain::delivery::Channel;
    use keygate_domain::ids::{DeliveryId, InstantKeyId};

    use super::*;

    fn entry() -> Entry {
        Entry {
            delivery: Delivery {
                id: DeliveryId::new(),
                workspace_id: WorkspaceId::new(),
                instant_key_id: InstantKeyId::new(),
                channel: Channel::Sms,
                to: "+15555551000".into(),
                status: Status::Sent,
                attempts: 1,
                last_error: None,
                created_at: keygate_domain::model::now(),
                sent_at: Some(keygate_domain::model::now()),
                sent_via: Some(SentVia::Outbox),
            },
            link: "http://localhost:8080/ik/abc".into(),
        }
    }

    #[test]
    fn listings_mask_the_recipient_and_show_the_link() {
        let e = entry();
        let t = text(std::slice::from_ref(&e));
        assert!(t.contains("sent (outbox)") && t.contains("+1•••••••000"));
        assert!(t.contains("http://localhost:8080/ik/abc"));
        assert!(!t.contains("+15555551000"));
        let h = html(&[e], "workspace <Hotel>");
        assert!(h.contains("href=\"http://localhost:8080/ik/abc\""));
        assert!(h.contains("workspace &lt;Hotel&gt;"));
        assert!(!h.contains("+15555551000"));
        assert!(text(&[]).contains("(no deliveries)"));
    }
}
