"""Smoke test of the json-doors connector: starts it as a process and calls every RPC over gRPC.

Run with the venv's interpreter (after setup.sh):

    connectors/.venv/bin/python connectors/json-doors/smoke.py

The client is built the way Keygate's own is, from the .proto files (grpc.protos_and_services). Exits
non-zero, with the connector's stderr, on the first failed check.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from keygate_json_doors import protos

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
TOKEN = "s3cret"
ACS = "acs_sys_smoke"

pb = protos.load(HERE.parent.parent / "proto")
c, m, s = pb.connector, pb.common, pb.systems
APPLIED, ALREADY = c.OUTCOME_STATUS_APPLIED, c.OUTCOME_STATUS_ALREADY_APPLIED


class Connector:
    """The connector process: started, stopped with SIGTERM, its port read from its first stdout line."""

    def __init__(self, state: Path, *extra: str) -> None:
        exe = VENV_BIN / "keygate-json-doors"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "keygate_json_doors"]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [*cmd, "--state", str(state), "--listen", "127.0.0.1:0", "--token", TOKEN, "--log-level", "info",
             *extra],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True,
        )
        line = self.proc.stdout.readline()  # blocks until the line is printed (or the process dies)
        check(line.startswith("listening on 127.0.0.1:"), f"first stdout line: {line!r}")
        self.addr = line.split("listening on ", 1)[1].strip()
        self.channel = grpc.insecure_channel(self.addr)
        self.stub = pb.services.AccessSystemConnectorServiceStub(self.channel)

    def call(self, rpc: str, request, token: str | None = TOKEN):
        metadata = [("authorization", f"Bearer {token}")] if token else []
        return getattr(self.stub, rpc)(request, metadata=metadata, timeout=10)

    def stop(self) -> None:
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=10)
        check(rc == 0, f"connector exited {rc} on SIGTERM")

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def error_of(fn, *args, **kwargs) -> tuple[grpc.StatusCode, str, str]:
    """Calls expecting a gRPC error; returns (code, reason from ErrorInfo or "", message)."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as err:
        reason = ""
        status = rpc_status.from_call(err)
        if status is not None:
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    check(info.domain == "keygate.dev", f"ErrorInfo domain {info.domain!r}")
                    reason = info.reason
        if reason:
            check(err.details().startswith(f"{reason}: "), f"message {err.details()!r} does not begin with reason")
        return err.code(), reason, err.details()
    raise AssertionError(f"expected a gRPC error from {args[0] if args else fn}")


def schedule(start: str, end: str):
    sched = m.AccessSchedule()
    sched.starts_at.FromJsonString(start)
    sched.ends_at.FromJsonString(end)
    return sched


def run(workdir: Path) -> None:
    state_path = workdir / "doors.json"
    state = lambda: json.loads(state_path.read_text())  # noqa: E731
    k = Connector(state_path)
    try:
        # -- authentication
        code, _, _ = error_of(k.call, "GetCapabilities", c.GetCapabilitiesRequest(acs_system_id=ACS), token=None)
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"no token: {code}")
        code, _, _ = error_of(k.call, "GetCapabilities", c.GetCapabilitiesRequest(acs_system_id=ACS), token="nope")
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"wrong token: {code}")

        # -- capabilities
        caps = k.call("GetCapabilities", c.GetCapabilitiesRequest(acs_system_id=ACS, reference_id="r-caps"))
        d = caps.capabilities
        check(caps.connector_name == "json-doors" and caps.external_type == "json_doors_site", str(caps))
        check(caps.connector_version != "", "connector_version")
        check(d.permission_model == s.PERMISSION_MODEL_CREDENTIAL_BASED, "permission model")
        check(list(d.supported_modes) == [m.ACCESS_METHOD_MODE_CARD, m.ACCESS_METHOD_MODE_CODE,
                                          m.ACCESS_METHOD_MODE_MOBILE_KEY], "modes")
        check((d.pin_code_rules.min_length, d.pin_code_rules.max_length) == (4, 6), "pin rules")
        check(d.can_remote_unlock and d.can_issue_mobile_keys and d.can_assign_entrances_directly
              and d.can_schedule_credentials and not d.is_card_encoding_required, "flags")
        check(d.rate_limit.requests_per_second > 0 and d.rate_limit.burst >= 1, "rate limit")
        check(state()["acs_system_id"] == ACS, "acs_system_id bound in the state file")

        # -- another access system is refused
        code, reason, _ = error_of(k.call, "SyncEntrances", c.SyncEntrancesRequest(acs_system_id="other"))
        check(code == grpc.StatusCode.FAILED_PRECONDITION, f"other acs_system_id: {code}")

        # -- listings with paging
        seen, token, pages = [], "", 0
        while True:
            page = k.call("SyncEntrances", c.SyncEntrancesRequest(acs_system_id=ACS, page_size=3, page_token=token))
            check(len(page.entrances) <= 3, "page_size honoured")
            seen += list(page.entrances)
            pages += 1
            token = page.next_page_token
            if not token:
                break
        check(pages == 2 and [e.external_id for e in seen] == ["door-front", "door-back", "door-room-1",
                                                                "door-room-2"], f"entrances {seen}")
        check(seen[0].display_name == "Front Door" and seen[0].can_unlock_with_code, "door fields")
        check(not seen[3].can_unlock_with_cloud_key, "Room 2 has no remote unlock")
        all_at_once = k.call("SyncEntrances", c.SyncEntrancesRequest(acs_system_id=ACS))
        check(len(all_at_once.entrances) == 4 and not all_at_once.next_page_token, "page_size 0")
        code, _, _ = error_of(k.call, "SyncEntrances", c.SyncEntrancesRequest(acs_system_id=ACS, page_token="x"))
        check(code == grpc.StatusCode.INVALID_ARGUMENT, "bad page token")
        groups = k.call("SyncAccessGroups", c.SyncAccessGroupsRequest(acs_system_id=ACS, page_size=10))
        check(len(groups.access_groups) == 0 and groups.next_page_token == "", "no groups, complete")
        encoders = k.call("SyncEncoders", c.SyncEncodersRequest(acs_system_id=ACS))
        check(len(encoders.encoders) == 0 and encoders.next_page_token == "", "no encoders, complete")

        # -- users
        ensure = c.EnsureUserRequest(acs_system_id=ACS, reference_id="acs_user_1", full_name="Ada Lovelace",
                                     email_address="ada@example.com")
        u1 = k.call("EnsureUser", ensure)
        check(u1.outcome.status == APPLIED and u1.user_external_id, "user created")
        u1b = k.call("EnsureUser", ensure)
        check(u1b.outcome.status == ALREADY and u1b.user_external_id == u1.user_external_id, "user repeat")
        ensure.phone_number = "+34600000000"
        u1c = k.call("EnsureUser", ensure)
        check(u1c.outcome.status == APPLIED and u1c.user_external_id == u1.user_external_id, "user update")
        users = state()["users"]
        check(len(users) == 1 and users[0]["reference_id"] == "acs_user_1"
              and users[0]["phone_number"] == "+34600000000", f"users in file {users}")
        uid = u1.user_external_id
        code, _, _ = error_of(k.call, "EnsureUser", c.EnsureUserRequest(acs_system_id=ACS, reference_id="x"))
        check(code == grpc.StatusCode.INVALID_ARGUMENT, "empty full_name")

        # -- direct access
        grant = c.GrantAccessRequest(acs_system_id=ACS, reference_id="grant_1", user_external_id=uid,
                                     entrances=c.EntranceSet(entrance_external_ids=["door-front", "door-back"]))
        check(k.call("GrantAccess", grant).outcome.status == APPLIED, "grant")
        check(k.call("GrantAccess", grant).outcome.status == ALREADY, "grant repeat")
        check(len(state()["access"]) == 1, "one access record")
        grant.entrances.entrance_external_ids.append("door-room-1")
        check(k.call("GrantAccess", grant).outcome.status == APPLIED, "grant changed by a repeat converges")
        check(state()["access"][0]["entrance_external_ids"] == ["door-front", "door-back", "door-room-1"], "grant updated")
        del grant.entrances.entrance_external_ids[2]
        check(k.call("GrantAccess", grant).outcome.status == APPLIED, "grant changed back")
        bad = c.GrantAccessRequest(acs_system_id=ACS, reference_id="grant_2", user_external_id=uid,
                                   entrances=c.EntranceSet(entrance_external_ids=["door-nope"]))
        check(error_of(k.call, "GrantAccess", bad)[0] == grpc.StatusCode.NOT_FOUND, "grant unknown door")
        rb = k.call("ReadBackState", c.ReadBackStateRequest(acs_system_id=ACS, reference_id="acs_user_1",
                                                            object_kind=c.OBJECT_KIND_USER))
        check(rb.exists and rb.user.external_id == uid and list(rb.user.entrance_external_ids)
              == ["door-front", "door-back"] and rb.user.phone_number == "+34600000000", f"user read back {rb}")
        revoke = c.RevokeAccessRequest(acs_system_id=ACS, reference_id="grant_1", user_external_id=uid,
                                       entrances=grant.entrances)
        check(k.call("RevokeAccess", revoke).outcome.status == APPLIED, "revoke access")
        check(k.call("RevokeAccess", revoke).outcome.status == ALREADY, "revoke access repeat")
        check(state()["access"] == [], "access gone")

        # -- credentials: code with a requested PIN, scheduled
        issue = c.IssueCredentialRequest(
            acs_system_id=ACS, reference_id="cred_code_1", user_external_id=uid, mode=m.ACCESS_METHOD_MODE_CODE,
            entrance_external_ids=["door-front", "door-room-1"], code="4821",
            schedule=schedule("2026-12-01T09:00:00Z", "2026-12-08T18:00:00Z"))
        r1 = k.call("IssueCredential", issue)
        check(r1.outcome.status == APPLIED and r1.code == "4821" and r1.credential_external_id, f"issue {r1}")
        r2 = k.call("IssueCredential", issue)
        check(r2.outcome.status == ALREADY and r2.credential_external_id == r1.credential_external_id
              and r2.code == "4821", "issue repeat returns the same credential")
        creds = state()["credentials"]
        check(len(creds) == 1, "one credential after the repeat")
        cred = creds[0]
        check(cred["reference_id"] == "cred_code_1" and cred["mode"] == "code" and cred["code"] == "4821"
              and cred["entrance_external_ids"] == ["door-front", "door-room-1"]
              and cred["schedule"] == {"starts_at": "2026-12-01T09:00:00Z", "ends_at": "2026-12-08T18:00:00Z"},
              f"credential in file {cred}")
        # the same reference with other doors and times (Keygate updated the grant): the same
        # credential converges, APPLIED; the PIN stays
        moved = c.IssueCredentialRequest()
        moved.CopyFrom(issue)
        del moved.entrance_external_ids[:]
        moved.entrance_external_ids.extend(["door-front"])
        moved.schedule.CopyFrom(schedule("2026-12-01T09:00:00Z", "2026-12-10T18:00:00Z"))
        r3 = k.call("IssueCredential", moved)
        check(r3.outcome.status == APPLIED and r3.credential_external_id == r1.credential_external_id
              and r3.code == "4821", f"issue with new doors and times converges {r3}")
        cred = state()["credentials"][0]
        check(len(state()["credentials"]) == 1 and cred["entrance_external_ids"] == ["door-front"]
              and cred["schedule"]["ends_at"] == "2026-12-10T18:00:00Z", f"converged in file {cred}")
        check(k.call("IssueCredential", moved).outcome.status == ALREADY, "converged repeat: ALREADY_APPLIED")
        check(k.call("IssueCredential", issue).outcome.status == APPLIED, "and back")
        # the same PIN for another credential: code_unavailable
        taken = c.IssueCredentialRequest(acs_system_id=ACS, reference_id="cred_code_2", user_external_id=uid,
                                         mode=m.ACCESS_METHOD_MODE_CODE, entrance_external_ids=["door-back"],
                                         code="4821")
        code, reason, _ = error_of(k.call, "IssueCredential", taken)
        check((code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "code_unavailable"), f"taken PIN {code} {reason}")
        # no PIN requested: one is generated within the rules
        taken.code = ""
        gen = k.call("IssueCredential", taken)
        check(gen.outcome.status == APPLIED and gen.code.isdigit() and 4 <= len(gen.code) <= 6
              and gen.code != "4821", f"generated PIN {gen.code}")
        # card and mobile key
        card = k.call("IssueCredential", c.IssueCredentialRequest(
            acs_system_id=ACS, reference_id="cred_card_1", user_external_id=uid, mode=m.ACCESS_METHOD_MODE_CARD,
            entrance_external_ids=["door-back"]))
        check(card.card_number.isdigit() and not card.is_card_encoding_required, f"card {card}")
        mobile = k.call("IssueCredential", c.IssueCredentialRequest(
            acs_system_id=ACS, reference_id="cred_mobile_1", user_external_id=uid,
            mode=m.ACCESS_METHOD_MODE_MOBILE_KEY, entrance_external_ids=["door-room-2"]))
        check(mobile.outcome.status == APPLIED and not mobile.code and not mobile.card_number, "mobile key")
        code, _, _ = error_of(k.call, "IssueCredential", c.IssueCredentialRequest(
            acs_system_id=ACS, reference_id="cred_x", user_external_id=uid, mode=m.ACCESS_METHOD_MODE_CARD,
            entrance_external_ids=["door-gone"]))
        check(code == grpc.StatusCode.NOT_FOUND, "unknown entrance on a credential")
        check(not any(x["reference_id"] == "cred_x" for x in state()["credentials"]), "nothing written on refusal")
        code, _, _ = error_of(k.call, "IssueCredential", c.IssueCredentialRequest(
            acs_system_id=ACS, reference_id="cred_y", user_external_id=uid, mode=m.ACCESS_METHOD_MODE_CLOUD_KEY,
            entrance_external_ids=["door-front"]))
        check(code == grpc.StatusCode.INVALID_ARGUMENT, "a mode the capabilities do not list")

        # read back, by reference and by external id
        rb = k.call("ReadBackState", c.ReadBackStateRequest(acs_system_id=ACS, reference_id="cred_code_1",
                                                            object_kind=c.OBJECT_KIND_CREDENTIAL))
        check(rb.exists and rb.credential.code == "4821" and rb.credential.mode == m.ACCESS_METHOD_MODE_CODE
              and rb.credential.user_external_id == uid and rb.credential.is_issued
              and rb.credential.schedule.ends_at.ToJsonString() == "2026-12-08T18:00:00Z", f"cred read back {rb}")
        rb = k.call("ReadBackState", c.ReadBackStateRequest(acs_system_id=ACS, external_id=card.credential_external_id,
                                                            object_kind=c.OBJECT_KIND_CREDENTIAL))
        check(rb.exists and rb.credential.card_number == card.card_number, "card read back by external id")
        rb = k.call("ReadBackState", c.ReadBackStateRequest(acs_system_id=ACS, reference_id="never",
                                                            object_kind=c.OBJECT_KIND_CREDENTIAL))
        check(not rb.exists and not rb.HasField("credential"), "unknown credential reads back absent")
        code, _, _ = error_of(k.call, "ReadBackState", c.ReadBackStateRequest(acs_system_id=ACS, reference_id="x"))
        check(code == grpc.StatusCode.INVALID_ARGUMENT, "object_kind unspecified")

        # revoke, twice
        rev = c.RevokeCredentialRequest(acs_system_id=ACS, reference_id="cred_card_1",
                                        credential_external_id=card.credential_external_id)
        check(k.call("RevokeCredential", rev).outcome.status == APPLIED, "revoke credential")
        check(k.call("RevokeCredential", rev).outcome.status == ALREADY, "revoke credential repeat")

        # encode: there are no encoders
        code, reason, _ = error_of(k.call, "EncodeCredential", c.EncodeCredentialRequest(
            acs_system_id=ACS, reference_id="aa_1", credential_external_id=r1.credential_external_id,
            encoder_external_id="enc-1"))
        check((code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "encoder_not_online"), f"encode {code} {reason}")

        # -- unlocks
        unlock = c.UnlockEntranceRequest(acs_system_id=ACS, reference_id="aa_unlock_1",
                                         entrance_external_id="door-front", user_external_id=uid)
        check(k.call("UnlockEntrance", unlock).outcome.status == APPLIED, "unlock")
        check(k.call("UnlockEntrance", unlock).outcome.status == ALREADY, "unlock repeat")
        unlocks = state()["unlocks"]
        check(len(unlocks) == 1 and unlocks[0]["entrance_external_id"] == "door-front"
              and unlocks[0]["reference_id"] == "aa_unlock_1", f"unlock log {unlocks}")
        code, reason, _ = error_of(k.call, "UnlockEntrance", c.UnlockEntranceRequest(
            acs_system_id=ACS, reference_id="aa_unlock_2", entrance_external_id="door-room-2"))
        check((code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "remote_unlock_not_supported"), "no cloud key")
        code, _, _ = error_of(k.call, "UnlockEntrance", c.UnlockEntranceRequest(
            acs_system_id=ACS, reference_id="aa_unlock_3", entrance_external_id="door-nope"))
        check(code == grpc.StatusCode.NOT_FOUND, "unlock unknown entrance")
        check(len(state()["unlocks"]) == 1, "refused unlocks are not logged")
    except BaseException:
        print(k.log(), file=sys.stderr)
        raise
    finally:
        k.stop()

    # -- edited while stopped (a credential deleted behind Keygate's back), then a restart keeps the rest
    edited = state()
    edited["credentials"] = [x for x in edited["credentials"] if x["reference_id"] != "cred_mobile_1"]
    state_path.write_text(json.dumps(edited, indent=2))
    k = Connector(state_path)
    try:
        rb = k.call("ReadBackState", c.ReadBackStateRequest(acs_system_id=ACS, reference_id="acs_user_1",
                                                            object_kind=c.OBJECT_KIND_USER))
        check(rb.exists and rb.user.external_id == uid, "user kept across the restart")
        rb = k.call("ReadBackState", c.ReadBackStateRequest(acs_system_id=ACS, reference_id="cred_code_1",
                                                            object_kind=c.OBJECT_KIND_CREDENTIAL))
        check(rb.exists and rb.credential.code == "4821", "credential kept across the restart")
        rb = k.call("ReadBackState", c.ReadBackStateRequest(acs_system_id=ACS, reference_id="cred_mobile_1",
                                                            object_kind=c.OBJECT_KIND_CREDENTIAL))
        check(not rb.exists, "the credential deleted in the file is gone")
        rev = c.RevokeCredentialRequest(acs_system_id=ACS, reference_id="cred_mobile_1",
                                        credential_external_id=mobile.credential_external_id)
        check(k.call("RevokeCredential", rev).outcome.status == ALREADY, "revoking what was deleted: ALREADY_APPLIED")
        check(k.call("UnlockEntrance", unlock).outcome.status == ALREADY, "unlock repeat after restart")
        code, _, _ = error_of(k.call, "GetCapabilities", c.GetCapabilitiesRequest(acs_system_id="other"))
        check(code == grpc.StatusCode.FAILED_PRECONDITION, "binding kept across the restart")

        # -- deleting the user takes its credentials; twice is ALREADY_APPLIED
        delete = c.DeleteUserRequest(acs_system_id=ACS, reference_id="acs_user_1", user_external_id=uid)
        check(k.call("DeleteUser", delete).outcome.status == APPLIED, "delete user")
        check(k.call("DeleteUser", delete).outcome.status == ALREADY, "delete user repeat")
        after = state()
        check(after["users"] == [] and after["credentials"] == [], f"user and credentials gone {after}")
    except BaseException:
        print(k.log(), file=sys.stderr)
        raise
    finally:
        k.stop()

    # -- the fault switches
    k = Connector(workdir / "faults.json", "--fail-first", "2", "--slow-ms", "200")
    try:
        t0 = time.monotonic()
        k.call("GetCapabilities", c.GetCapabilitiesRequest(acs_system_id=ACS))  # not a changing call
        check(time.monotonic() - t0 >= 0.2, "--slow-ms")
        ensure = c.EnsureUserRequest(acs_system_id=ACS, reference_id="acs_user_2", full_name="Grace Hopper")
        for attempt in (1, 2):
            code, _, _ = error_of(k.call, "EnsureUser", ensure)
            check(code == grpc.StatusCode.UNAVAILABLE, f"--fail-first attempt {attempt}: {code}")
        check(json.loads((workdir / "faults.json").read_text())["users"] == [], "a failed call changes nothing")
        check(k.call("EnsureUser", ensure).outcome.status == APPLIED, "third attempt succeeds")
    except BaseException:
        print(k.log(), file=sys.stderr)
        raise
    finally:
        k.stop()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="json-doors-smoke.") as tmp:
        started = time.monotonic()
        run(Path(tmp))
    print(f"smoke.py: OK ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.exit(main())
