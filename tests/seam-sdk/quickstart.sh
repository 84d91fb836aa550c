#!/usr/bin/env bash
# Seed 004's access grant quick start, cURL (bash), against Keygate. The block between
# `--- seed 004 ---` and `--- end of seed ---` is the seed's code as written, with Seam's host
# (https://connect.getseam.com) replaced by $SEAM_ENDPOINT; check.sh moves its dates into the
# future. SEAM_ENDPOINT, SEAM_API_KEY and acs_system_id come from the environment.
set -euo pipefail
: "${SEAM_ENDPOINT:?}" "${SEAM_API_KEY:?}" "${acs_system_id:?}"

# --- seed 004: Step 1, cURL (bash) ---------------------------------------------------------------
# Identify the IDs of the entrances to which
# you want to grant access.
# Use the access system ID that you copied in the previous step.
mapfile -t entrances < <(
  curl -s --request POST "$SEAM_ENDPOINT/acs/entrances/list" \
    --header "Authorization: Bearer $SEAM_API_KEY" \
    --header "Content-Type: application/json" \
    --data "{\"acs_system_id\": \"$acs_system_id\"}" | 
  jq -c '.acs_entrances[]'
)

# Create the Access Grant.
# In this command:
# - Create a new user identity to represent your user.
# - Specify the IDs of the entrances to which you want to grant access.
# - Specify the access methods that you want to issue.
# - Specify the access schedule.
access_grant=$(curl --include --request POST "$SEAM_ENDPOINT/access_grants/create" \
  -H "Authorization: Bearer $SEAM_API_KEY" \
  -H 'Content-Type: application/json' \
  -d "{
    \"user_identity\": {
      \"full_name\": \"Jane Doe\",
      \"email_address\": \"jane.doe@example.com\",
      \"phone_number\": \"+15555551000\"
    },
    \"acs_entrance_ids\": [
      \"$(echo ${entrances[0]} | jq -r '.acs_entrance_id')\",
      \"$(echo ${entrances[1]} | jq -r '.acs_entrance_id')\"
    ],
    \"requested_access_methods\": [
      {
        \"mode\": \"card\"
      },
      {
        \"mode\": \"mobile_key\"
      }
    ],
    \"starts_at\": \"2025-08-01T15:00:00.000Z\",
    \"ends_at\": \"2025-08-04T11:00:00.000Z\"
}")
# --- end of seed --------------------------------------------------------------------------------

check() {
  if ! eval "$1"; then
    echo "quickstart.sh: FAILED: $2" >&2
    exit 1
  fi
  echo "quickstart.sh: ok: $2"
}
check '[[ ${#entrances[@]} -ge 2 ]]' "${#entrances[@]} entrances of the Salto Space system"
check '[[ "$access_grant" == "HTTP/1.1 200"* ]]' "access_grants/create answered 200"
body="${access_grant#*$'\r\n\r\n'}"
check '[[ "$(jq -r .ok <<<"$body")" == true ]]' "the envelope says ok"
check '[[ "$(jq -r ".access_grant.requested_access_methods | map(.mode) | join(\",\")" <<<"$body")" == card,mobile_key ]]' \
  "a card and a mobile key were requested"
check '[[ -n "$(jq -r ".access_grant.instant_key_url // empty" <<<"$body")" ]]' "the grant has its instant_key_url"
echo "quickstart.sh: OK"
