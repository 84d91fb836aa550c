// Starts Seam's own fake server (@seamapi/fake-seam-connect, pinned in package.json) for the Seam
// adapter's tests (crates/keygate-providers/tests/seam.rs), seeded with this test's own data, and
// prints one JSON line with the URL and the seeded ids once it listens.
//
// In front of the fake runs a thin layer, `shim` below, for what the pinned fake does not have:
// routes the adapter needs that the fake lacks (written from the published API reference,
// docs.seam.co, over the fake's own database where it has the objects) and one-shot faults for
// the conformance suite. Everything else, and every route the fake has, goes to the fake
// unchanged. The routes the shim answers are listed in SHIMMED; nothing else is touched.
//
// Usage: node start.mjs            (ports chosen by the OS; JSON on stdout)

import http from "node:http"
import { randomUUID } from "node:crypto"
import { createFake } from "@seamapi/fake-seam-connect"

const fake = await createFake()
const db = fake.database

// ---------------------------------------------------------------------------------------------
// Seed: workspaces, each with its own API key.
//   B: two systems (a Visionline system and a Salto KS site): acs_system_id must be chosen.
//   More on request, each a Salto KS site of its own (POST /_keygate/site_workspace), or smart
//   locks of their own (POST /_keygate/locks_workspace): one per test, so tests running at once
//   never see each other's objects or faults.
// ---------------------------------------------------------------------------------------------

const suffix = randomUUID().replaceAll("-", "")
const seeded = { workspaces: {} }

function workspace(name, key) {
  const ws = db.addWorkspace({ name, workspace_id: randomUUID(), is_sandbox: true })
  const token = `seam_${key}_${suffix}`
  db.addApiKey({ name: `${name} key`, token, workspace_id: ws.workspace_id })
  const ca = db.addConnectedAccount({
    provider: "salto",
    workspace_id: ws.workspace_id,
    user_identifier: { email: "site-admin@example.com" },
  })
  return { ws, token, ca }
}

// Which entrances each access group opens (the fake's access groups carry no entrances).
const groupEntrances = new Map()

// A workspace with one Salto KS site (access groups): three entrances, two groups.
let siteCount = 0
function siteWorkspace() {
  siteCount += 1
  const w = workspace(`Keygate site ${siteCount}`, `keygate${siteCount}`)
  const site = db.addAcsSystem({
    external_type: "salto_site",
    name: "Keygate Test Site",
    workspace_id: w.ws.workspace_id,
    connected_account_id: w.ca.connected_account_id,
  })
  const [main, lobby, garage] = ["Main Entrance", "Lobby", "Garage"].map((display_name) =>
    db.addAcsEntrance({ acs_system_id: site.acs_system_id, display_name }),
  )
  const group = (name) =>
    db.addAcsAccessGroup({
      acs_system_id: site.acs_system_id,
      external_type: "salto_access_group",
      name,
      workspace_id: w.ws.workspace_id,
    })
  const staff = group("Staff")
  const visitors = group("Visitors")
  groupEntrances.set(staff.acs_access_group_id, [main.acs_entrance_id, lobby.acs_entrance_id, garage.acs_entrance_id])
  groupEntrances.set(visitors.acs_access_group_id, [lobby.acs_entrance_id])
  return {
    api_key: w.token,
    workspace_id: w.ws.workspace_id,
    acs_system_id: site.acs_system_id,
    entrances: [main.acs_entrance_id, lobby.acs_entrance_id, garage.acs_entrance_id],
    access_groups: [staff.acs_access_group_id, visitors.acs_access_group_id],
  }
}

// A workspace with smart locks (the fake's own devices): an August account with two locks that
// take codes and unlock remotely (different PIN lengths) and a gate that only unlocks remotely,
// and a second account (Yale) with one lock, for `connected_account_id`.
let locksCount = 0
function locksWorkspace() {
  locksCount += 1
  const w = workspace(`Keygate locks ${locksCount}`, `keygatelocks${locksCount}`)
  const lock = (ca, device_type, name, codes, lengths) =>
    db.addDevice({
      connected_account_id: ca,
      device_type,
      name,
      display_name: name,
      workspace_id: w.ws.workspace_id,
      can_remotely_lock: true,
      can_remotely_unlock: true,
      can_program_online_access_codes: codes,
      properties: {
        name,
        manufacturer: device_type.split("_")[0],
        locked: true,
        ...(lengths == null ? {} : { supported_code_lengths: lengths }),
      },
    })
  const august = w.ca.connected_account_id
  const front = lock(august, "august_lock", "Front Door", true, [4, 5, 6])
  const back = lock(august, "august_lock", "Back Door", true, [4, 5, 6, 7, 8])
  const gate = lock(august, "august_lock", "Garden Gate", false, null)
  const yale = db.addConnectedAccount({
    provider: "yale",
    workspace_id: w.ws.workspace_id,
    user_identifier: { email: "owner@example.com" },
  })
  const garage = lock(yale.connected_account_id, "yale_lock", "Garage", true, [6])
  return {
    api_key: w.token,
    workspace_id: w.ws.workspace_id,
    connected_account_ids: [august, yale.connected_account_id],
    device_ids: [front.device_id, back.device_id, gate.device_id, garage.device_id],
  }
}

const b = workspace("Keygate B", "keygateB")
const visionline = db.addAcsSystem({
  external_type: "visionline_system",
  name: "Hotel",
  workspace_id: b.ws.workspace_id,
  connected_account_id: b.ca.connected_account_id,
})
db.addAcsEntrance({ acs_system_id: visionline.acs_system_id, display_name: "Room 101" })
const siteB = db.addAcsSystem({
  external_type: "salto_site",
  name: "Office",
  workspace_id: b.ws.workspace_id,
  connected_account_id: b.ca.connected_account_id,
})
db.addAcsEntrance({ acs_system_id: siteB.acs_system_id, display_name: "Office Door" })

seeded.workspaces.b = {
  api_key: b.token,
  workspace_id: b.ws.workspace_id,
  acs_system_ids: [visionline.acs_system_id, siteB.acs_system_id],
}

// ---------------------------------------------------------------------------------------------
// The fake, on a port of its own.
// ---------------------------------------------------------------------------------------------

const server = await fake.startServer()
const fakePort = server.port

// ---------------------------------------------------------------------------------------------
// The shim.
// ---------------------------------------------------------------------------------------------

// Routes the pinned fake lacks (or, for /acs/entrances/list with acs_credential_id, ignores).
const SHIMMED = [
  "/user_identities/get",
  "/user_identities/create",
  "/acs/access_groups/list",
  "/acs/access_groups/list_accessible_entrances",
  "/acs/encoders/list",
  "/acs/credentials/create",
  "/acs/credentials/list",
  "/acs/credentials/get",
  "/acs/credentials/delete",
  "/acs/entrances/list (with acs_credential_id)",
  "/access_codes/create (keeps common_code_key, which the pinned fake drops)",
  "/access_grants/create",
  "/access_grants/get",
  "/access_grants/list",
  "/access_grants/update",
  "/access_grants/delete",
  "/access_methods/list",
]

// Calls that only read: a scripted fault hits the next call that is not one of these.
const READS = new Set([
  "/acs/systems/get",
  "/acs/systems/list",
  "/acs/entrances/list",
  "/acs/entrances/get",
  "/acs/access_groups/list",
  "/acs/access_groups/list_accessible_entrances",
  "/acs/encoders/list",
  "/acs/users/list",
  "/acs/users/get",
  "/acs/credentials/list",
  "/acs/credentials/get",
  "/user_identities/get",
  "/action_attempts/get",
  "/locks/list",
  "/locks/get",
  "/devices/list",
  "/devices/get",
  "/access_codes/list",
  "/access_codes/get",
  "/access_grants/get",
  "/access_grants/list",
  "/access_methods/list",
])

const credentials = [] // acs_credential objects made by /acs/credentials/create
const accessGrants = [] // access_grant objects made by /access_grants/create
const accessMethods = [] // their access methods (one per requested method, on the grant's devices)
const ACCESS_METHOD_MODES = ["code", "card", "mobile_key", "cloud_key"]
let nextCredential = 1
const faults = new Map() // workspace id -> one-shot "unavailable" | "500_after" | "timeout_before" | "refused"

function send(res, status, body) {
  const text = JSON.stringify(body)
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  res.end(text)
}

function seamError(res, status, type, message) {
  send(res, status, { error: { type, message, request_id: randomUUID() } })
}

function workspaceOf(req) {
  const token = (req.headers.authorization ?? "").split("Bearer ")[1]
  const key = db.api_keys.find((k) => k.token === token)
  return key?.workspace_id ?? null
}

function strip(o) {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !k.startsWith("_")))
}

// Answers a shimmed route; returns false to pass the call on to the fake.
function shim(path, body, ws, res) {
  switch (path) {
    case "/user_identities/get": {
      const ui = db.user_identities.find(
        (u) =>
          u.workspace_id === ws &&
          ((body.user_identity_id != null && u.user_identity_id === body.user_identity_id) ||
            (body.user_identity_key != null && u.user_identity_key === body.user_identity_key)),
      )
      if (ui == null) return seamError(res, 404, "user_identity_not_found", "User identity not found")
      return send(res, 200, { user_identity: ui })
    }
    case "/user_identities/create": {
      if (
        body.user_identity_key != null &&
        db.user_identities.some((u) => u.workspace_id === ws && u.user_identity_key === body.user_identity_key)
      ) {
        return seamError(res, 400, "user_identity_key_taken", "User identity key is taken")
      }
      const ui = db.addUserIdentity({
        workspace_id: ws,
        user_identity_id: randomUUID(),
        user_identity_key: body.user_identity_key,
        full_name: body.full_name,
        email_address: body.email_address,
        phone_number: body.phone_number,
      })
      return send(res, 200, { user_identity: ui })
    }
    case "/acs/access_groups/list": {
      const groups = db.acs_access_groups.filter(
        (g) =>
          g.workspace_id === ws &&
          (body.acs_system_id == null || g.acs_system_id === body.acs_system_id) &&
          (body.acs_user_id == null || g._acs_user_ids.includes(body.acs_user_id)),
      )
      return send(res, 200, { acs_access_groups: groups.map(strip) })
    }
    case "/acs/access_groups/list_accessible_entrances": {
      const ids = groupEntrances.get(body.acs_access_group_id) ?? []
      const entrances = db.acs_entrances.filter((e) => ids.includes(e.acs_entrance_id))
      return send(res, 200, { acs_entrances: entrances.map(strip) })
    }
    case "/acs/encoders/list":
      return send(res, 200, { acs_encoders: [] })
    case "/acs/credentials/create": {
      const user = db.acs_users.find((u) => u.acs_user_id === body.acs_user_id && u.workspace_id === ws)
      if (user == null) return seamError(res, 404, "acs_user_not_found", "Access control user not found")
      if (!["code", "card", "mobile_key", "cloud_key"].includes(body.access_method)) {
        return seamError(res, 400, "invalid_input", "access_method is not valid")
      }
      const c = {
        acs_credential_id: `acs_credential${nextCredential++}`,
        acs_user_id: user.acs_user_id,
        acs_system_id: user.acs_system_id,
        workspace_id: ws,
        access_method: body.access_method,
        code: body.code ?? (body.access_method === "code" ? String(100000 + nextCredential) : null),
        starts_at: body.starts_at ?? null,
        ends_at: body.ends_at ?? null,
        is_managed: true,
        created_at: new Date().toISOString(),
        _entrances: body.allowed_acs_entrance_ids ?? [],
      }
      credentials.push(c)
      return send(res, 200, { acs_credential: strip(c) })
    }
    case "/acs/credentials/list": {
      const list = credentials.filter(
        (c) =>
          c.workspace_id === ws &&
          (body.acs_user_id == null || c.acs_user_id === body.acs_user_id) &&
          (body.acs_system_id == null || c.acs_system_id === body.acs_system_id),
      )
      return send(res, 200, { acs_credentials: list.map(strip) })
    }
    case "/acs/credentials/get": {
      const c = credentials.find((c) => c.acs_credential_id === body.acs_credential_id && c.workspace_id === ws)
      if (c == null) return seamError(res, 404, "acs_credential_not_found", "Credential not found")
      return send(res, 200, { acs_credential: strip(c) })
    }
    case "/acs/credentials/delete": {
      const i = credentials.findIndex((c) => c.acs_credential_id === body.acs_credential_id && c.workspace_id === ws)
      if (i < 0) return seamError(res, 404, "acs_credential_not_found", "Credential not found")
      credentials.splice(i, 1)
      return send(res, 200, {})
    }
    // Access grants (docs.seam.co/latest/api/access_grants): a user identity's access to
    // devices in a window, through requested access methods; found by access_grant_key.
    case "/access_grants/create": {
      const identity = db.user_identities.find((u) => u.workspace_id === ws && u.user_identity_id === body.user_identity_id)
      if (identity == null) return seamError(res, 404, "user_identity_not_found", "User identity not found")
      if (body.access_grant_key != null && accessGrants.some((g) => g.workspace_id === ws && g.access_grant_key === body.access_grant_key)) {
        return seamError(res, 400, "access_grant_key_taken", "An access grant with this key already exists")
      }
      const devices = body.device_ids ?? []
      for (const d of devices) {
        if (!db.devices.some((x) => x.device_id === d && x.workspace_id === ws)) {
          return seamError(res, 404, "device_not_found", `Device ${d} not found`)
        }
      }
      const requested = body.requested_access_methods ?? []
      if (requested.length === 0 || requested.some((m) => !ACCESS_METHOD_MODES.includes(m?.mode))) {
        return seamError(res, 400, "invalid_input", "requested_access_methods is not valid")
      }
      if (body.starts_at != null && body.ends_at != null && new Date(body.ends_at) <= new Date(body.starts_at)) {
        return seamError(res, 400, "invalid_input", "ends_at must be after starts_at")
      }
      const now = new Date().toISOString()
      const g = {
        workspace_id: ws,
        access_grant_id: randomUUID(),
        access_grant_key: body.access_grant_key,
        user_identity_id: identity.user_identity_id,
        location_ids: [],
        space_ids: [],
        requested_access_methods: [],
        access_method_ids: [],
        name: body.name ?? null,
        display_name: body.name ?? "Access Grant",
        created_at: now,
        starts_at: body.starts_at ?? now,
        ends_at: body.ends_at ?? null,
        warnings: [],
        _device_ids: devices,
      }
      for (const m of requested) {
        const am = {
          workspace_id: ws,
          access_method_id: randomUUID(),
          display_name: m.mode,
          mode: m.mode,
          created_at: now,
          is_issued: m.mode === "cloud_key",
          _access_grant_id: g.access_grant_id,
          _device_ids: devices,
        }
        accessMethods.push(am)
        g.access_method_ids.push(am.access_method_id)
        g.requested_access_methods.push({ display_name: m.mode, mode: m.mode, created_at: now, created_access_method_ids: [am.access_method_id] })
      }
      accessGrants.push(g)
      return send(res, 200, { access_grant: strip(g) })
    }
    case "/access_grants/get": {
      const g = accessGrants.find(
        (g) =>
          g.workspace_id === ws &&
          ((body.access_grant_id != null && g.access_grant_id === body.access_grant_id) ||
            (body.access_grant_key != null && g.access_grant_key === body.access_grant_key)),
      )
      if (g == null) return seamError(res, 404, "access_grant_not_found", "Access grant not found")
      return send(res, 200, { access_grant: strip(g) })
    }
    case "/access_grants/list": {
      const list = accessGrants.filter(
        (g) =>
          g.workspace_id === ws &&
          (body.user_identity_id == null || g.user_identity_id === body.user_identity_id) &&
          (body.access_grant_key == null || g.access_grant_key === body.access_grant_key),
      )
      return send(res, 200, { access_grants: list.map(strip) })
    }
    case "/access_grants/update": {
      const g = accessGrants.find((g) => g.workspace_id === ws && g.access_grant_id === body.access_grant_id)
      if (g == null) return seamError(res, 404, "access_grant_not_found", "Access grant not found")
      if (body.starts_at != null) g.starts_at = body.starts_at
      if (body.ends_at !== undefined) g.ends_at = body.ends_at
      if (body.name != null) g.name = g.display_name = body.name
      return send(res, 200, {})
    }
    case "/access_grants/delete": {
      const i = accessGrants.findIndex((g) => g.workspace_id === ws && g.access_grant_id === body.access_grant_id)
      if (i < 0) return seamError(res, 404, "access_grant_not_found", "Access grant not found")
      const [g] = accessGrants.splice(i, 1)
      for (let j = accessMethods.length - 1; j >= 0; j--) {
        if (accessMethods[j]._access_grant_id === g.access_grant_id) accessMethods.splice(j, 1)
      }
      return send(res, 200, {})
    }
    case "/access_methods/list": {
      const grant = accessGrants.find(
        (g) =>
          g.workspace_id === ws &&
          ((body.access_grant_id != null && g.access_grant_id === body.access_grant_id) ||
            (body.access_grant_key != null && g.access_grant_key === body.access_grant_key)),
      )
      if (grant == null) return seamError(res, 404, "access_grant_not_found", "Access grant not found")
      const list = accessMethods.filter(
        (m) =>
          m._access_grant_id === grant.access_grant_id &&
          (body.device_id == null || m._device_ids.includes(body.device_id)),
      )
      return send(res, 200, { access_methods: list.map(strip) })
    }
    case "/acs/entrances/list": {
      if (body.acs_credential_id == null) return false
      const c = credentials.find((c) => c.acs_credential_id === body.acs_credential_id && c.workspace_id === ws)
      const entrances = db.acs_entrances.filter((e) => (c?._entrances ?? []).includes(e.acs_entrance_id))
      return send(res, 200, { acs_entrances: entrances.map(strip) })
    }
    default:
      return false
  }
}

// What the shim adds to an answer of the fake: /access_codes/create keeps the request's
// common_code_key on the code (the published API takes and returns it; the pinned fake's schema
// drops it).
function after(path, body, out) {
  if (path !== "/access_codes/create" || out.status !== 200 || body.common_code_key == null) return out
  try {
    const answer = JSON.parse(Buffer.concat(out.chunks).toString())
    const id = answer?.access_code?.access_code_id
    if (id == null) return out
    db.updateAccessCode({ access_code_id: id, common_code_key: body.common_code_key })
    answer.access_code.common_code_key = body.common_code_key
    out.chunks = [Buffer.from(JSON.stringify(answer))]
  } catch {
    // Not JSON: passed on as the fake answered.
  }
  return out
}

function forward(req, res, raw) {
  const up = http.request(
    { host: "127.0.0.1", port: fakePort, path: req.url, method: req.method, headers: req.headers },
    (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers)
      r.pipe(res)
    },
  )
  up.on("error", () => seamError(res, 502, "bad_gateway", "the fake did not answer"))
  up.end(raw)
}

// Runs the call (shimmed or forwarded) and collects what it answered, without sending it.
function run(req, path, body, ws, raw) {
  return new Promise((resolve) => {
    const out = {
      status: 200,
      headers: {},
      chunks: [],
      writeHead(s, h) {
        this.status = s
        this.headers = h ?? {}
      },
      write(c) {
        this.chunks.push(Buffer.from(c))
      },
      end(c) {
        if (c != null) this.chunks.push(Buffer.from(c))
        resolve(this)
      },
      on() {},
      once() {},
      emit() {},
      removeListener() {},
    }
    if (ws == null || shim(path, body, ws, out) === false) {
      const up = http.request(
        { host: "127.0.0.1", port: fakePort, path: req.url, method: req.method, headers: req.headers },
        (r) => {
          out.status = r.statusCode ?? 502
          out.headers = r.headers
          r.on("data", (c) => out.chunks.push(c))
          r.on("end", () => resolve(after(path, body, out)))
        },
      )
      up.on("error", () => {
        out.status = 502
        resolve(out)
      })
      up.end(raw)
    }
  })
}

const front = http.createServer((req, res) => {
  const chunks = []
  req.on("data", (c) => chunks.push(c))
  req.on("end", async () => {
    const raw = Buffer.concat(chunks)
    const path = (req.url ?? "").split("?")[0]
    if (path === "/_keygate/fault") {
      const { workspace_id, kind } = JSON.parse(raw.toString() || "{}")
      faults.set(workspace_id, kind)
      return send(res, 200, {})
    }
    if (path === "/_keygate/site_workspace") return send(res, 200, siteWorkspace())
    if (path === "/_keygate/locks_workspace") return send(res, 200, locksWorkspace())
    if (path === "/_keygate/state") {
      return send(res, 200, {
        credentials: credentials.map((c) => ({ ...strip(c), acs_entrance_ids: c._entrances })),
        group_entrances: Object.fromEntries(groupEntrances),
        access_grants: accessGrants.map((g) => ({ ...strip(g), device_ids: g._device_ids })),
      })
    }
    if (path.startsWith("/_fake/")) return forward(req, res, raw)
    let body = {}
    try {
      body = raw.length ? JSON.parse(raw.toString()) : {}
    } catch {
      return seamError(res, 400, "invalid_json", "the body is not JSON")
    }
    const ws = workspaceOf(req)
    const write = !READS.has(path)
    if (ws != null && write && faults.has(ws)) {
      const f = faults.get(ws)
      faults.delete(ws)
      if (f === "unavailable") return res.writeHead(503).end()
      if (f === "refused") return seamError(res, 400, "invalid_input", "refused by the test")
      if (f === "timeout_before") {
        // Never applied; answered after the client gave up.
        setTimeout(() => seamError(res, 504, "timeout", "too late"), 3_000)
        return
      }
      if (f === "500_after") {
        await run(req, path, body, ws, raw)
        return seamError(res, 500, "internal_server_error", "failed after applying")
      }
    }
    const out = await run(req, path, body, ws, raw)
    const headers = { ...out.headers }
    delete headers["transfer-encoding"]
    const payload = Buffer.concat(out.chunks)
    headers["content-length"] = payload.length
    res.writeHead(out.status, headers)
    res.end(payload)
  })
})

front.listen(0, "127.0.0.1", () => {
  const { port } = front.address()
  process.stdout.write(
    JSON.stringify({ url: `http://127.0.0.1:${port}`, fake_url: `http://127.0.0.1:${fakePort}`, shimmed: SHIMMED, ...seeded }) + "\n",
  )
})

// Stop with the test: when stdin closes (the test process ended), exit.
process.stdin.on("end", () => process.exit(0))
process.stdin.resume()
