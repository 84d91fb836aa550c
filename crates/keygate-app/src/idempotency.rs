//! `request_id` idempotency (AIP-155): the claim a create carries into its transaction. The
//! same id with the same body replays the first result; the same id with another body is
//! `ALREADY_EXISTS` with `IDEMPOTENCY_KEY_REUSED` (decided by the store, in the transaction).

use keygate_store::Idempotency;
use sha2::{Digest as _, Sha256};

/// The claim of one create: its operation, the caller's `request_id` and a fingerprint of the
/// request body as the adapter received it (without the `request_id`). `None` when the caller
/// gave no `request_id`.
pub fn claim(
    operation: &'static str,
    request_id: Option<String>,
    body: &[u8],
) -> Option<Idempotency> {
    request_id.map(|request_id| Idempotency {
        request_id,
        operation,
        request_sha256: Sha256::digest(body).to_vec(),
    })
}
