"""Seed 004's access grant quick start, Python, run with the official `seam` SDK against Keygate.

The blocks between `--- seed 004 ---` and `--- end of seed ---` are the seed's code as written;
check.sh only moves its dates into the future before running this file. The rest is what the
seed leaves to the reader (the access system id "copied in the previous step", the ids of the
created access methods where the seed prints example ids) and what the issue asks CI to see:
the card encoded and issued, the Instant Key link, the events, and bad input surfacing as the
SDK's own typed errors. SEAM_ENDPOINT and SEAM_API_KEY come from the environment, as the seed
expects.
"""

import os
import sys
import time

from seam import Seam as _Seam
from seam import SeamHttpApiError, SeamHttpInvalidInputError, SeamHttpUnauthorizedError


def check(cond, what):
    if not cond:
        print(f"quickstart.py: FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"quickstart.py: ok: {what}")


# The seed's "Before you begin": the virtual Salto Space system's id, as the console shows it.
acs_system_id = next(
    s.acs_system_id for s in _Seam().acs.systems.list() if s.external_type == "salto_space_system"
)

# --- seed 004: Step 1, Python -------------------------------------------------------------------
from seam import Seam

seam = Seam()  # Seam automatically uses your exported SEAM_API_KEY.

# Identify the IDs of the entrances to which
# you want to grant access.
entrances = seam.acs.entrances.list(
  # Use the access system ID that you copied in the previous step.
  acs_system_id=acs_system_id
)

# Create the Access Grant.
access_grant = seam.access_grants.create(
  # Create a new user identity to represent your user.
  user_identity={
   "full_name": "Jane Doe",
   "email_address": "jane.doe@example.com",
   "phone_number": "+15555551000"
  },
  # Specify the IDs of the entrances to which you want to grant access.
  acs_entrance_ids=[
    entrances[0].acs_entrance_id,
    entrances[1].acs_entrance_id
  ],

  # Specify the access methods that you want to issue.
  requested_access_methods=[
    {"mode": "card"},
    {"mode": "mobile_key"}
  ],
  # Specify the access schedule.
  starts_at="2025-08-01T15:00:00.000Z",
  ends_at="2025-08-04T11:00:00.000Z"
)
# --- end of seed --------------------------------------------------------------------------------

check(len(entrances) >= 2, f"{len(entrances)} entrances of the Salto Space system")
check(access_grant.access_grant_id, f"access grant {access_grant.access_grant_id} created")
modes = {r["mode"]: r["created_access_method_ids"][0] for r in access_grant.requested_access_methods}
check(set(modes) == {"card", "mobile_key"}, "a card and a mobile key were requested")
check(access_grant.instant_key_url, f"the grant's instant_key_url: {access_grant.instant_key_url}")
card_id, mobile_id = modes["card"], modes["mobile_key"]

# --- seed 004: Step 2, Python (the seed's example id replaced by the card's) ---------------------
deadline = time.monotonic() + 30
while True:
    card = seam.access_methods.get(
      access_method_id = card_id
    )
    if card.is_encoding_required or time.monotonic() > deadline:
        break
    time.sleep(0.5)
# --- end of seed --------------------------------------------------------------------------------
check(card.is_encoding_required is True, "the card says is_encoding_required")
check(card.is_issued is False, "the card is not issued before it is encoded")

encoder = seam.acs.encoders.list(acs_system_id=acs_system_id)[0]
attempt = seam.access_methods.encode(access_method_id=card_id, acs_encoder_id=encoder.acs_encoder_id)
check(attempt.status == "success", f"encode: action attempt {attempt.action_attempt_id} succeeded")

# --- seed 004: Step 3, Python (the seed's example id replaced by the card's) ---------------------
card = seam.access_methods.get(
  access_method_id = card_id
)
# --- end of seed --------------------------------------------------------------------------------
check(card.is_issued is True and card.issued_at, f"the card is issued at {card.issued_at}")
check(card.is_encoding_required is False, "the card no longer needs encoding")

mobile = seam.access_methods.get(access_method_id=mobile_id)
check(mobile.instant_key_url == access_grant.instant_key_url, "the mobile key carries the Instant Key link")

events = seam.events.list(access_grant_id=access_grant.access_grant_id)
types = {e.event_type for e in events}
check("access_method.card_encoding_required" in types, f"events of the grant: {sorted(types)}")

# Bad input and unknown ids surface as the SDK's typed errors, not transport errors.
try:
    seam.access_grants.create(
        user_identity={"full_name": "Jane Doe"},
        acs_entrance_ids=[entrances[0].acs_entrance_id],
        requested_access_methods=[{"mode": "teleport"}],
    )
    check(False, "an unknown mode is refused")
except SeamHttpInvalidInputError as e:
    check(
        e.get_validation_error_messages("requested_access_methods"),
        f"an unknown mode is SeamHttpInvalidInputError on requested_access_methods: {e}",
    )
try:
    seam.access_grants.get(access_grant_id="00000000-0000-7000-8000-000000000000")
    check(False, "an unknown grant is refused")
except SeamHttpApiError as e:
    check(e.code == "access_grant_not_found" and e.status_code == 404, f"an unknown grant is {e.code}")
try:
    _Seam(api_key=os.environ["SEAM_API_KEY"][:-4] + "AAAA").workspaces.get()
    check(False, "a wrong key is refused")
except SeamHttpUnauthorizedError:
    check(True, "a wrong key is SeamHttpUnauthorizedError")

print("quickstart.py: OK")
