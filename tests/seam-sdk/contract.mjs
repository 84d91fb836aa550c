// The contract test: every route the Seam-compatible API serves (the list in
// services/seam-api/src/routes.rs) is called at least once, and every success body is validated
// against the 200 response schema of that path and verb in Seam's OpenAPI (@seamapi/types
// 1.977.0, lib/seam/connect/openapi.js), every error body against Seam's error envelope.
// SEAM_ENDPOINT and SEAM_API_KEY come from the environment (check.sh sets them).
import { readFileSync } from "node:fs";

import { openapi } from "@seamapi/types/connect";
import Ajv from "ajv";
import addFormats from "ajv-formats";

const ENDPOINT = process.env.SEAM_ENDPOINT;
const KEY = process.env.SEAM_API_KEY;

const served = [
  ...readFileSync(new URL("../../services/seam-api/src/routes.rs", import.meta.url), "utf8")
    .matchAll(/\("([a-z_/]+)", Alt::/g),
].map((m) => m[1]);

const ajv = new Ajv({ strict: false, allErrors: true });
addFormats(ajv);
// OpenAPI 3.0's `nullable` as JSON Schema: the type (and enum) also admit null; where there is
// no type (a `$ref`, a `oneOf`), the schema or null.
const jsonSchema = (node) => {
  if (Array.isArray(node)) return node.map(jsonSchema);
  if (node === null || typeof node !== "object") return node;
  const out = Object.fromEntries(Object.entries(node).map(([k, v]) => [k, jsonSchema(v)]));
  if (out.nullable !== true) return out;
  delete out.nullable;
  if (typeof out.type === "string" && !out.oneOf && !out.anyOf && !out.allOf) {
    out.type = [out.type, "null"];
    if (Array.isArray(out.enum)) out.enum = [...out.enum, null];
    return out;
  }
  return { anyOf: [out, { type: "null" }] };
};
ajv.addSchema({ ...jsonSchema(openapi), $id: "seam" });
const pointer = (s) => s.replaceAll("~", "~0").replaceAll("/", "~1");
const validators = new Map();
const validator = (route, verb) => {
  const k = `${verb} ${route}`;
  if (!validators.has(k)) {
    const ref = `seam#/paths/${pointer(`/${route}`)}/${verb}/responses/200/content/${pointer("application/json")}/schema`;
    validators.set(k, ajv.compile({ $ref: ref }));
  }
  return validators.get(k);
};

// Keygate's event catalogue has types Seam's does not (docs/seam-compatibility.md); such events are
// checked for the fields every Seam event has, and listed at the end.
const seamEventTypes = new Set(
  openapi.components.schemas.event.oneOf.map((v) => v.properties.event_type.enum[0]),
);
const keygateOnly = new Set();
const seamEvents = (body) => {
  const own = (e) => {
    if (seamEventTypes.has(e.event_type)) return true;
    keygateOnly.add(e.event_type);
    for (const k of ["event_id", "event_type", "workspace_id", "created_at", "occurred_at"]) {
      if (typeof e[k] !== "string") failures.push(`event ${e.event_type}: no ${k}`);
    }
    return false;
  };
  if (Array.isArray(body.events)) return { ...body, events: body.events.filter(own) };
  if (body.event && !own(body.event)) return null;
  return body;
};

const refused = [];
const called = new Set();
const failures = [];
let checked = 0;

/** Calls a route and checks its reply; returns the body. */
const call = async (route, params = {}, verb = "post") => {
  called.add(route);
  let url = `${ENDPOINT}/${route}`;
  const init = { method: verb.toUpperCase(), headers: { authorization: `Bearer ${KEY}` } };
  if (verb === "get" || verb === "delete") {
    const q = new URLSearchParams(params);
    if ([...q].length) url += `?${q}&_strict=true`;
  } else {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(params);
  }
  const resp = await fetch(url, init);
  const body = await resp.json();
  checked += 1;
  if (!resp.headers.get("seam-request-id")) failures.push(`${route}: no seam-request-id`);
  const checkable = resp.status === 200 ? seamEvents(body) : null;
  if (checkable) {
    const validate = validator(route, verb);
    if (!validate(checkable)) {
      const errors = validate.errors
        .map((e) => `${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`)
        .slice(0, 8);
      failures.push(`${verb.toUpperCase()} /${route}:\n    ${errors.join("\n    ")}`);
    }
  } else if (resp.status !== 200) {
    refused.push(`${route} ${resp.status} ${body?.error?.type}`);
    const e = body?.error;
    if (
      body?.ok !== false ||
      typeof e?.type !== "string" ||
      typeof e?.message !== "string" ||
      e?.request_id !== resp.headers.get("seam-request-id")
    ) {
      failures.push(`${route}: ${resp.status} is not Seam's error envelope: ${JSON.stringify(body)}`);
    }
  }
  return { status: resp.status, body };
};
const must = async (...args) => {
  const r = await call(...args);
  if (r.status !== 200) throw new Error(`${args[0]}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- The flow -------------------------------------------------------------------------------------
await must("workspaces/get", {}, "get");
const { acs_systems } = await must("acs/systems/list", {}, "get");
const space = acs_systems.find((s) => s.external_type === "salto_space_system").acs_system_id;
const ks = acs_systems.find((s) => s.external_type === "salto_ks_site").acs_system_id;
await must("acs/systems/get", { acs_system_id: space }, "get");
const { acs_entrances } = await must("acs/entrances/list", { acs_system_id: space, limit: 3 }, "get");
await must("acs/entrances/get", { acs_entrance_id: acs_entrances[0].acs_entrance_id }, "get");
const { acs_encoders } = await must("acs/encoders/list", { acs_system_id: space }, "get");
await must("acs/encoders/get", { acs_encoder_id: acs_encoders[0].acs_encoder_id }, "get");
const { acs_access_groups } = await must("acs/access_groups/list", { acs_system_id: ks }, "get");
await must("acs/access_groups/get", { acs_access_group_id: acs_access_groups[0].acs_access_group_id }, "get");
await must("acs/access_groups/list_accessible_entrances", { acs_access_group_id: acs_access_groups[0].acs_access_group_id }, "get");

const future = (days) => new Date(Date.now() + days * 86_400_000).toISOString();
const { access_grant } = await must("access_grants/create", {
  user_identity: { full_name: "Jane Doe", email_address: "jane.doe@example.com" },
  acs_entrance_ids: [acs_entrances[0].acs_entrance_id, acs_entrances[1].acs_entrance_id],
  requested_access_methods: [{ mode: "card" }, { mode: "mobile_key" }],
  starts_at: new Date().toISOString(),
  ends_at: future(3),
});
const grant = access_grant.access_grant_id;
const [card, mobile] = access_grant.requested_access_methods.map((r) => r.created_access_method_ids[0]);
await must("access_grants/get", { access_grant_id: grant }, "get");
await must("access_grants/list", { user_identity_id: access_grant.user_identity_id }, "get");
await must("access_grants/update", { access_grant_id: grant, name: "Jane's stay" }, "patch");
// A new end while the doors are granted: the grant and its methods show the time change.
for (let i = 0; i < 60; i += 1) {
  const { access_grant: g } = await must("access_grants/get", { access_grant_id: grant }, "get");
  if (g.pending_mutations.length === 0 && g.requested_access_methods.length) break;
  await sleep(250);
}
await must("access_grants/update", { access_grant_id: grant, ends_at: future(4) }, "patch");
await must("access_grants/get", { access_grant_id: grant }, "get");
await must("access_methods/get", { access_method_id: mobile }, "get");
for (let i = 0; i < 60; i += 1) {
  const { access_method } = await must("access_methods/get", { access_method_id: card }, "get");
  if (access_method.is_encoding_required) break;
  await sleep(250);
}
await must("access_methods/list", { access_grant_id: grant }, "get");
let { action_attempt } = await must("access_methods/encode", {
  access_method_id: card,
  acs_encoder_id: acs_encoders[0].acs_encoder_id,
});
for (let i = 0; i < 60 && action_attempt.status === "pending"; i += 1) {
  await sleep(250);
  ({ action_attempt } = await must("action_attempts/get", { action_attempt_id: action_attempt.action_attempt_id }, "get"));
}
await must("action_attempts/list", { action_attempt_ids: [action_attempt.action_attempt_id] }, "get");
// Mobile keys are issued once provisioned; unlock through the key and through the entrance.
for (let i = 0; i < 60; i += 1) {
  const { access_method } = await must("access_methods/get", { access_method_id: mobile }, "get");
  if (access_method.is_issued) break;
  await sleep(250);
}
// Salto Space cannot unlock remotely (an error reply); Salto KS can.
await call("access_methods/unlock_door", { access_method_id: mobile, acs_entrance_id: acs_entrances[0].acs_entrance_id });
const { acs_entrances: ksDoors } = await must("acs/entrances/list", { acs_system_id: ks }, "get");
const remote = ksDoors.find((e) => e.can_unlock_with_cloud_key);
({ action_attempt } = await must("acs/entrances/unlock", { acs_entrance_id: remote.acs_entrance_id }));
for (let i = 0; i < 60 && action_attempt.status === "pending"; i += 1) {
  await sleep(250);
  ({ action_attempt } = await must("action_attempts/get", { action_attempt_id: action_attempt.action_attempt_id }, "get"));
}
const { access_grant: ksGrant } = await must("access_grants/create", {
  user_identity_id: access_grant.user_identity_id,
  acs_entrance_ids: [remote.acs_entrance_id],
  requested_access_methods: [{ mode: "mobile_key" }],
});
const ksKey = ksGrant.access_method_ids[0];
for (let i = 0; i < 60; i += 1) {
  const { access_method } = await must("access_methods/get", { access_method_id: ksKey }, "get");
  if (access_method.is_issued) break;
  await sleep(250);
}
({ action_attempt } = await must("access_methods/unlock_door", { access_method_id: ksKey, acs_entrance_id: remote.acs_entrance_id }));
for (let i = 0; i < 60 && action_attempt.status === "pending"; i += 1) {
  await sleep(250);
  ({ action_attempt } = await must("action_attempts/get", { action_attempt_id: action_attempt.action_attempt_id }, "get"));
}
const { events } = await must("events/list", { access_grant_id: grant }, "get");
await must("events/get", { event_id: events[0].event_id }, "get");

const { user_identity } = await must("user_identities/create", { full_name: "Ada", email_address: "ada@example.com" });
const ada = user_identity.user_identity_id;
await must("user_identities/get", { user_identity_id: ada }, "get");
await must("user_identities/list", { limit: 10 }, "get");
await must("user_identities/update", { user_identity_id: ada, phone_number: "+15555551001" }, "patch");
const { instant_key } = await must("user_identities/generate_instant_key", { user_identity_id: ada });
await must("instant_keys/get", { instant_key_id: instant_key.instant_key_id }, "get");
await must("instant_keys/list", { user_identity_id: ada }, "get");
await must("instant_keys/delete", { instant_key_id: instant_key.instant_key_id }, "delete");

const { acs_user } = await must("acs/users/create", { acs_system_id: ks, full_name: "Ada", email_address: "ada@example.com" });
const user = acs_user.acs_user_id;
await must("acs/users/get", { acs_user_id: user }, "get");
await must("acs/users/list", { acs_system_id: ks }, "get");
const group = acs_access_groups[0].acs_access_group_id;
await must("acs/users/add_to_access_group", { acs_user_id: user, acs_access_group_id: group }, "put");
await must("acs/users/remove_from_access_group", { acs_user_id: user, acs_access_group_id: group }, "delete");
await must("acs/access_groups/add_user", { acs_user_id: user, acs_access_group_id: group }, "put");
await must("acs/access_groups/list_users", { acs_access_group_id: group }, "get");
await must("user_identities/add_acs_user", { user_identity_id: ada, acs_user_id: user }, "put");
const { acs_users: adas } = await must("user_identities/list_acs_users", { user_identity_id: ada }, "get");
if (adas.length !== 1 || adas[0].acs_user_id !== user) failures.push("list_acs_users: not Ada's user");
await must("user_identities/list_acs_systems", { user_identity_id: ada }, "get");
const { acs_credential } = await must("acs/credentials/create", { acs_user_id: user, access_method: "mobile_key" });
await must("acs/credentials/list", { acs_user_id: user }, "get");
await must("acs/credentials/delete", { acs_credential_id: acs_credential.acs_credential_id }, "delete");
await must("user_identities/remove_acs_user", { user_identity_id: ada, acs_user_id: user }, "delete");
await must("user_identities/add_acs_user", { user_identity_id: ada, acs_user_id: user }, "put");
await must("user_identities/remove_acs_user", { user_identity_id: ada, acs_user_id: user });
await must("acs/access_groups/remove_user", { acs_user_id: user, acs_access_group_id: group }, "delete");
await must("acs/users/delete", { acs_user_id: user }, "delete");

const { webhook } = await must("webhooks/create", { url: "http://127.0.0.1:9/keygate-hook", event_types: ["access_grant.created"] });
await must("webhooks/get", { webhook_id: webhook.webhook_id }, "get");
await must("webhooks/list", {}, "get");
await must("webhooks/update", { webhook_id: webhook.webhook_id, event_types: ["access_method.issued"] }, "put");
await must("webhooks/update", { webhook_id: webhook.webhook_id, event_types: ["access_grant.created"] });
await must("webhooks/delete", { webhook_id: webhook.webhook_id }, "delete");

await must("access_methods/delete", { access_method_id: mobile }, "delete");
await must("access_grants/delete", { access_grant_id: grant }, "delete");
await must("user_identities/delete", { user_identity_id: ada }, "delete");

// Errors are envelopes too.
await call("access_grants/get", { access_grant_id: grant }, "get");
await call("access_grants/create", { requested_access_methods: [] });

// --- The verdict ----------------------------------------------------------------------------------
const missed = served.filter((r) => !called.has(r));
if (missed.length) failures.push(`routes served but not called here: ${missed.join(", ")}`);
if (failures.length) {
  console.error(`contract.mjs: ${failures.length} failure(s) in ${checked} replies:\n  ${failures.join("\n  ")}`);
  process.exit(1);
}
console.log(`contract.mjs: OK: ${checked} replies of ${served.length} routes match @seamapi/types 1.977.0`);
console.log(`contract.mjs: error replies (envelope checked): ${refused.join("; ")}`);
if (keygateOnly.size) {
  console.log(`contract.mjs: event types Keygate has and Seam does not (common fields checked): ${[...keygateOnly].sort().join(", ")}`);
}
