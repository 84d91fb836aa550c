// Seed 004's access grant quick start, JavaScript, run with the official `seam` package against
// Keygate. The blocks between `--- seed 004 ---` and `--- end of seed ---` are the seed's code
// as written; check.sh only moves its dates into the future before running this file. The rest
// is what the seed leaves to the reader (the access system id "copied in the previous step",
// the ids of the created access methods where the seed prints example ids) and what the issue
// asks CI to see. SEAM_ENDPOINT and SEAM_API_KEY come from the environment, as the seed expects.
import {
  Seam as _Seam,
  SeamHttpApiError,
  SeamHttpInvalidInputError,
  SeamHttpUnauthorizedError,
} from "seam";

const check = (cond, what) => {
  if (!cond) {
    console.error(`quickstart.mjs: FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`quickstart.mjs: ok: ${what}`);
};

// The seed's "Before you begin": the virtual Salto Space system's id, as the console shows it.
const acsSystemId = (await new _Seam().acs.systems.list()).find(
  (s) => s.external_type === "salto_space_system",
).acs_system_id;

// --- seed 004: Step 1, JavaScript ---------------------------------------------------------------
import { Seam } from "seam";

const seam = new Seam(); // Seam automatically uses your exported SEAM_API_KEY.

// Identify the IDs of the entrances to which
// you want to grant access.
const entrances = await seam.acs.entrances.list({
  // Use the access system ID that you copied in the previous step.
  acs_system_id: acsSystemId
});

// Create the Access Grant.
const accessGrant = await seam.accessGrants.create({
  // Create a new user identity to represent your user.
  user_identity: {
    full_name: "Jane Doe",
    email_address: "jane.doe@example.com",
    phone_number: "+15555551000"    
  },
  // Specify the IDs of the entrances to which you want to grant access.
  acs_entrance_ids: [
    entrances[0].acs_entrance_id,
    entrances[1].acs_entrance_id
  ],
  // Specify the access methods that you want to issue.
  requested_access_methods: [
    {"mode": "card"},
    {"mode": "mobile_key"}
  ],
  // Specify the access schedule.
  starts_at: "2025-08-01T15:00:00.000Z",
  ends_at: "2025-08-04T11:00:00.000Z"
});
// --- end of seed --------------------------------------------------------------------------------

check(entrances.length >= 2, `${entrances.length} entrances of the Salto Space system`);
check(accessGrant.access_grant_id, `access grant ${accessGrant.access_grant_id} created`);
const ids = Object.fromEntries(
  accessGrant.requested_access_methods.map((r) => [r.mode, r.created_access_method_ids[0]]),
);
check(ids.card && ids.mobile_key, "a card and a mobile key were requested");
check(accessGrant.instant_key_url, `the grant's instant_key_url: ${accessGrant.instant_key_url}`);

let card;
const deadline = Date.now() + 30_000;
for (;;) {
  // --- seed 004: Step 2, JavaScript (the seed's example id replaced by the card's) -------------
  card = await seam.accessMethods.get({
    access_method_id: ids.card
  });
  // --- end of seed ------------------------------------------------------------------------------
  if (card.is_encoding_required || Date.now() > deadline) break;
  await new Promise((r) => setTimeout(r, 500));
}
check(card.is_encoding_required === true, "the card says is_encoding_required");
check(card.is_issued === false, "the card is not issued before it is encoded");

const [encoder] = await seam.acs.encoders.list({ acs_system_id: acsSystemId });
const attempt = await seam.accessMethods.encode({
  access_method_id: ids.card,
  acs_encoder_id: encoder.acs_encoder_id,
});
check(attempt.status === "success", `encode: action attempt ${attempt.action_attempt_id} succeeded`);

// --- seed 004: Step 3, JavaScript (the seed's example id replaced by the card's) ---------------
card = await seam.accessMethods.get({
  access_method_id: ids.card
});
// --- end of seed --------------------------------------------------------------------------------
check(card.is_issued === true && card.issued_at, `the card is issued at ${card.issued_at}`);
check(card.is_encoding_required === false, "the card no longer needs encoding");

const mobile = await seam.accessMethods.get({ access_method_id: ids.mobile_key });
check(mobile.instant_key_url === accessGrant.instant_key_url, "the mobile key carries the Instant Key link");

const events = await seam.events.list({ access_grant_id: accessGrant.access_grant_id });
const types = [...new Set(events.map((e) => e.event_type))].sort();
check(types.includes("access_method.card_encoding_required"), `events of the grant: ${types}`);

// The paginator walks Keygate's pages (limit 1 forces one page per entrance).
const pages = seam.createPaginator(seam.acs.entrances.list({ acs_system_id: acsSystemId, limit: 1 }));
const all = await pages.flattenToArray();
check(all.length === entrances.length, `the paginator read ${all.length} entrances one page at a time`);

// Bad input and unknown ids surface as the SDK's typed errors, not transport errors.
try {
  await seam.accessGrants.create({
    user_identity: { full_name: "Jane Doe" },
    acs_entrance_ids: [entrances[0].acs_entrance_id],
    requested_access_methods: [{ mode: "teleport" }],
  });
  check(false, "an unknown mode is refused");
} catch (e) {
  check(
    e instanceof SeamHttpInvalidInputError &&
      e.getValidationErrorMessages("requested_access_methods").length > 0,
    `an unknown mode is SeamHttpInvalidInputError on requested_access_methods: ${e.message}`,
  );
}
try {
  await seam.accessGrants.get({ access_grant_id: "00000000-0000-7000-8000-000000000000" });
  check(false, "an unknown grant is refused");
} catch (e) {
  check(
    e instanceof SeamHttpApiError && e.code === "access_grant_not_found" && e.statusCode === 404,
    `an unknown grant is ${e.code}`,
  );
}
try {
  await new _Seam({ apiKey: process.env.SEAM_API_KEY.slice(0, -4) + "AAAA" }).workspaces.get();
  check(false, "a wrong key is refused");
} catch (e) {
  check(e instanceof SeamHttpUnauthorizedError, "a wrong key is SeamHttpUnauthorizedError");
}

console.log("quickstart.mjs: OK");
