"""The connector: Keygate's `AccessSystemConnectorService` on top of the JSON store.

Read it top to bottom as a walk-through of the contract (proto/keygate/connector/v1/connector.proto):

  1. Errors: `Refusal` and `_abort`, a gRPC status code plus a reason (google.rpc.ErrorInfo in the status
     details AND `<reason>: ` at the start of the message).
  2. `rpc`: what every call goes through: the fault switches, the single access system this site serves.
  3. Capabilities and the three listings (entrances, access groups, encoders), with paging.
  4. Changing calls, each idempotent by `reference_id`: a repeat converges on the same object and answers
     OUTCOME_STATUS_ALREADY_APPLIED; revoking or deleting what is gone is ALREADY_APPLIED, never NOT_FOUND.
  5. ReadBackState: what the "provider" holds, by external id or by reference id.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
from typing import Any, Callable

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from . import __version__
from .protos import Protos
from .store import Store, find

log = logging.getLogger("keygate_json_doors")

ERROR_DOMAIN = "keygate.dev"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
PIN_MIN, PIN_MAX = 4, 6

# The access method modes this site issues, and their names in the state file.
MODE_NAMES = {"ACCESS_METHOD_MODE_CARD": "card", "ACCESS_METHOD_MODE_CODE": "code",
              "ACCESS_METHOD_MODE_MOBILE_KEY": "mobile_key"}


# --- 1. Errors ---------------------------------------------------------------------------------------------


class Refusal(Exception):
    """A call answered with a gRPC error. Raise it anywhere inside an RPC; `rpc` turns it into the status.

    code     what Keygate acts on (FAILED_PRECONDITION: permanent, NOT_FOUND: sync again, UNAVAILABLE: retry...)
    reason   a snake_case reason Keygate understands (`code_unavailable`, `remote_unlock_not_supported`,
             `encoder_not_online`, `applied_unknown`, ...), or "" when the code says it all.
    """

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


def _abort(context: grpc.ServicerContext, refusal: Refusal) -> None:
    message = f"{refusal.reason}: {refusal.message}" if refusal.reason else refusal.message
    status = status_pb2.Status(code=refusal.code.value[0], message=message)
    if refusal.reason:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason=refusal.reason, domain=ERROR_DOMAIN))
        status.details.append(detail)
    context.abort_with_status(rpc_status.to_status(status))


def invalid(message: str) -> Refusal:
    return Refusal(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> Refusal:
    return Refusal(grpc.StatusCode.NOT_FOUND, message)


def refused(reason: str, message: str) -> Refusal:
    return Refusal(grpc.StatusCode.FAILED_PRECONDITION, message, reason)


# --- 2. What every call goes through -----------------------------------------------------------------------


def rpc(*, changing: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wraps an RPC method: fault switches, the access system check, Refusal -> gRPC status, a log line."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(self: "Connector", request: Any, context: grpc.ServicerContext) -> Any:
            name = method.__name__
            try:
                self._faults(changing)
                self._check_access_system(name, request.acs_system_id)
                response = method(self, request, context)
            except Refusal as refusal:
                log.info("%s reference_id=%s -> %s %s", name, request.reference_id, refusal.code.name,
                         refusal.reason or refusal.message)
                _abort(context, refusal)
            outcome = getattr(response, "outcome", None)
            log.info("%s reference_id=%s -> %s", name, request.reference_id,
                     self.pb.connector.OutcomeStatus.Name(outcome.status) if outcome is not None else "OK")
            return response

        return call

    return wrap


# --- helpers: protobuf <-> JSON ----------------------------------------------------------------------------


def schedule_to_json(message: Any, field: str) -> dict[str, str | None] | None:
    """An AccessSchedule field as {"starts_at": RFC 3339 or null, "ends_at": ...}; None when absent."""
    if not message.HasField(field):
        return None
    schedule = getattr(message, field)
    return {
        "starts_at": schedule.starts_at.ToJsonString() if schedule.HasField("starts_at") else None,
        "ends_at": schedule.ends_at.ToJsonString() if schedule.HasField("ends_at") else None,
    }


def schedule_from_json(pb: Protos, value: dict[str, str | None] | None) -> Any:
    if value is None:
        return None
    schedule = pb.common.AccessSchedule()
    for key in ("starts_at", "ends_at"):
        if value.get(key):
            stamp = timestamp_pb2.Timestamp()
            stamp.FromJsonString(value[key])
            getattr(schedule, key).CopyFrom(stamp)
    return schedule


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def _page(items: list[Any], page_size: int, page_token: str) -> tuple[list[Any], str]:
    """One page of `items` and the token of the next ("" on the last). The token is an offset, opaque to Keygate."""
    if page_size < 0:
        raise invalid("page_size must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    try:
        start = int(page_token) if page_token else 0
    except ValueError:
        raise invalid(f"page_token {page_token!r} was not returned by this connector") from None
    if start < 0:
        raise invalid(f"page_token {page_token!r} was not returned by this connector")
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


class Connector:
    """The servicer. Each public method is one RPC of the contract.

    The generated `AccessSystemConnectorServiceServicer` base class only exists once the protos are loaded,
    so this class does not derive from it: `add_AccessSystemConnectorServiceServicer_to_server` only looks
    the methods up by name.
    """

    def __init__(self, pb: Protos, store: Store, *, slow_ms: int = 0, fail_first: int = 0) -> None:
        self.pb = pb
        self.store = store
        self.slow_ms = slow_ms
        self._failures_left = fail_first
        self._faults_lock = threading.Lock()

    def _faults(self, changing: bool) -> None:
        """--slow-ms and --fail-first: make a test see a slow or flaky provider. Nothing is changed on failure."""
        if self.slow_ms:
            time.sleep(self.slow_ms / 1000)
        if changing:
            with self._faults_lock:
                if self._failures_left > 0:
                    self._failures_left -= 1
                    raise Refusal(grpc.StatusCode.UNAVAILABLE, "simulated provider outage (--fail-first)")

    def _check_access_system(self, rpc_name: str, acs_system_id: str) -> None:
        """This site is one access system: the first `acs_system_id` seen is recorded and any other refused.

        A connector serving several provider accounts would instead look up its settings by `acs_system_id`.
        GetCapabilities may come before Keygate has an id, so it answers without one (and binds nothing).
        """
        if not acs_system_id:
            if rpc_name == "GetCapabilities":
                return
            raise invalid("acs_system_id is required")
        bound = self.store.read().get("acs_system_id")
        if bound == acs_system_id:
            return
        if bound:
            raise refused("wrong_access_system", f"this json-doors site belongs to access system {bound}, "
                                                 f"not {acs_system_id}")
        with self.store.edit() as state:
            if state.get("acs_system_id") in (None, ""):
                state["acs_system_id"] = acs_system_id
            elif state["acs_system_id"] != acs_system_id:
                raise refused("wrong_access_system",
                              f"this json-doors site belongs to access system {state['acs_system_id']}")

    def _outcome(self, applied: bool) -> Any:
        c = self.pb.connector
        return c.ProviderOutcome(status=c.OUTCOME_STATUS_APPLIED if applied else c.OUTCOME_STATUS_ALREADY_APPLIED)

    # --- 3. Capabilities and listings ----------------------------------------------------------------------

    @rpc(changing=False)
    def GetCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        s, m = self.pb.systems, self.pb.common
        return self.pb.connector.GetCapabilitiesResponse(
            capabilities=s.CapabilityDescriptor(
                # Entrances travel on each credential (IssueCredential), not through access groups.
                permission_model=s.PERMISSION_MODEL_CREDENTIAL_BASED,
                supported_modes=[m.ACCESS_METHOD_MODE_CARD, m.ACCESS_METHOD_MODE_CODE,
                                 m.ACCESS_METHOD_MODE_MOBILE_KEY],
                pin_code_rules=s.PinCodeRules(
                    generator=s.PIN_CODE_GENERATOR_PROVIDER,  # we generate one when no code is requested
                    min_length=PIN_MIN, max_length=PIN_MAX,
                    can_request_code=True, is_code_per_entrance=False,
                ),
                is_card_encoding_required=False,
                can_remote_unlock=True,
                can_issue_mobile_keys=True,
                can_assign_entrances_directly=True,
                can_schedule_credentials=True,
                rate_limit=s.ProviderRateLimit(requests_per_second=20, burst=20),
            ),
            connector_name="json-doors",
            connector_version=__version__,
            external_type="json_doors_site",
        )

    @rpc(changing=False)
    def SyncEntrances(self, request: Any, context: grpc.ServicerContext) -> Any:
        doors = self.store.read()["doors"]
        page, next_token = _page(doors, request.page_size, request.page_token)
        fields = self.pb.connector.ProviderEntrance.DESCRIPTOR.fields_by_name
        entrances = [self.pb.connector.ProviderEntrance(**{k: v for k, v in d.items() if k in fields})
                     for d in page]
        return self.pb.connector.SyncEntrancesResponse(entrances=entrances, next_page_token=next_token)

    @rpc(changing=False)
    def SyncAccessGroups(self, request: Any, context: grpc.ServicerContext) -> Any:
        # credential_based: no groups. An empty, complete listing (not UNIMPLEMENTED: the RPC works).
        page, next_token = _page([], request.page_size, request.page_token)
        return self.pb.connector.SyncAccessGroupsResponse(access_groups=page, next_page_token=next_token)

    @rpc(changing=False)
    def SyncEncoders(self, request: Any, context: grpc.ServicerContext) -> Any:
        # Cards need no encoding here, so there are no encoders: an empty, complete listing.
        page, next_token = _page([], request.page_size, request.page_token)
        return self.pb.connector.SyncEncodersResponse(encoders=page, next_page_token=next_token)

    # --- 4. Changing calls, idempotent by reference_id -----------------------------------------------------

    @rpc(changing=True)
    def EnsureUser(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.reference_id:
            raise invalid("reference_id is required")
        if not 1 <= len(request.full_name) <= 200:
            raise invalid("full_name must have 1 to 200 characters")
        wanted = {
            "full_name": request.full_name,
            "email_address": request.email_address,
            "phone_number": request.phone_number,
            "access_schedule": schedule_to_json(request, "access_schedule"),
        }
        with self.store.edit() as state:
            user = find(state["users"], reference_id=request.reference_id)
            if user is None:  # first call: create
                user = {"external_id": _new_id("user"), "reference_id": request.reference_id, **wanted}
                state["users"].append(user)
                applied = True
            else:  # a retry or an update: converge on the request
                applied = any(user.get(k) != v for k, v in wanted.items())
                user.update(wanted)
        return self.pb.connector.EnsureUserResponse(outcome=self._outcome(applied),
                                                    user_external_id=user["external_id"])

    @rpc(changing=True)
    def DeleteUser(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.store.edit() as state:
            user = self._find_by_ids(state["users"], request.user_external_id, request.reference_id)
            if user is None:
                return self.pb.connector.DeleteUserResponse(outcome=self._outcome(False))  # already gone
            uid = user["external_id"]
            # The user and everything it holds.
            state["users"].remove(user)
            state["access"] = [a for a in state["access"] if a.get("user_external_id") != uid]
            state["credentials"] = [c for c in state["credentials"] if c.get("user_external_id") != uid]
        return self.pb.connector.DeleteUserResponse(outcome=self._outcome(True))

    @rpc(changing=True)
    def GrantAccess(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.reference_id:
            raise invalid("reference_id is required")
        target = request.WhichOneof("target")
        if target == "access_group_external_id":
            raise not_found(f"access group {request.access_group_external_id} does not exist "
                            "(json-doors has no access groups)")
        if target != "entrances" or not request.entrances.entrance_external_ids:
            raise invalid("entrances with at least one entrance_external_id are required")
        entrances = list(dict.fromkeys(request.entrances.entrance_external_ids))
        wanted = {
            "user_external_id": request.user_external_id,
            "entrance_external_ids": entrances,
            "schedule": schedule_to_json(request, "schedule"),
        }
        with self.store.edit() as state:
            self._require_user(state, request.user_external_id)
            self._require_doors(state, entrances)
            access = find(state["access"], reference_id=request.reference_id)
            if access is None:
                state["access"].append({"reference_id": request.reference_id, **wanted})
                applied = True
            else:
                applied = any(access.get(k) != v for k, v in wanted.items())
                access.update(wanted)
        return self.pb.connector.GrantAccessResponse(outcome=self._outcome(applied))

    @rpc(changing=True)
    def RevokeAccess(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.store.edit() as state:
            access = find(state["access"], reference_id=request.reference_id)
            if access is not None:
                state["access"].remove(access)
        return self.pb.connector.RevokeAccessResponse(outcome=self._outcome(access is not None))

    @rpc(changing=True)
    def IssueCredential(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.reference_id:
            raise invalid("reference_id is required")
        mode_name = self.pb.common.AccessMethodMode.Name(request.mode)
        if mode_name not in MODE_NAMES:
            raise invalid(f"mode {mode_name} is not one json-doors issues (card, code, mobile_key)")
        mode = MODE_NAMES[mode_name]
        with self.store.edit() as state:
            self._require_user(state, request.user_external_id)
            if not request.entrance_external_ids:
                raise invalid("entrance_external_ids are required: entrances are assigned on credentials")
            entrances = list(dict.fromkeys(request.entrance_external_ids))
            self._require_doors(state, entrances)
            schedule = schedule_to_json(request, "schedule")

            # Idempotency by reference_id: a retry gets the credential already issued, and a call
            # with other entrances or times (Keygate updated the grant) changes that credential,
            # never a second one. Its PIN or card number stays unless another is named.
            cred = find(state["credentials"], reference_id=request.reference_id)
            if cred is not None:
                changed = False
                if cred["entrance_external_ids"] != entrances or cred.get("schedule") != schedule:
                    cred["entrance_external_ids"] = entrances
                    cred["schedule"] = schedule
                    changed = True
                if mode == "code" and request.code and request.code != cred.get("code"):
                    cred["code"] = self._pick_code(state, request.code)
                    changed = True
                return self._issue_response(cred, applied=changed)

            code = card_number = None
            if mode == "code":
                code = self._pick_code(state, request.code)
            elif mode == "card":
                card_number = request.card_number or self._new_card_number(state)
            cred = {
                "external_id": _new_id("cred"),
                "reference_id": request.reference_id,
                "user_external_id": request.user_external_id,
                "mode": mode,
                "code": code,
                "card_number": card_number,
                "entrance_external_ids": entrances,
                "schedule": schedule_to_json(request, "schedule"),
            }
            state["credentials"].append(cred)
        return self._issue_response(cred, applied=True)

    def _issue_response(self, cred: dict[str, Any], *, applied: bool) -> Any:
        return self.pb.connector.IssueCredentialResponse(
            outcome=self._outcome(applied),
            credential_external_id=cred["external_id"],
            code=cred.get("code") or "",
            card_number=cred.get("card_number") or "",
            is_card_encoding_required=False,
        )

    def _pick_code(self, state: dict[str, Any], requested: str) -> str:
        """The requested PIN if it is free, else `code_unavailable`; a fresh one when none is requested."""
        in_use = {c.get("code") for c in state["credentials"] if c.get("mode") == "code"}
        if requested:
            if not (requested.isdigit() and requested.isascii() and PIN_MIN <= len(requested) <= PIN_MAX):
                raise invalid(f"code must be {PIN_MIN} to {PIN_MAX} digits")
            if requested in in_use:
                raise refused("code_unavailable", "another credential of this site already has that PIN")
            return requested
        while True:
            code = "".join(secrets.choice("0123456789") for _ in range(PIN_MAX))
            if code not in in_use:
                return code

    @staticmethod
    def _new_card_number(state: dict[str, Any]) -> str:
        in_use = {c.get("card_number") for c in state["credentials"]}
        while True:
            number = str(secrets.randbelow(9 * 10**9) + 10**9)  # ten digits
            if number not in in_use:
                return number

    @rpc(changing=True)
    def RevokeCredential(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.store.edit() as state:
            cred = self._find_by_ids(state["credentials"], request.credential_external_id, request.reference_id)
            if cred is not None:
                state["credentials"].remove(cred)
        # Already gone (revoked before, or deleted behind Keygate's back) is success: ALREADY_APPLIED.
        return self.pb.connector.RevokeCredentialResponse(outcome=self._outcome(cred is not None))

    @rpc(changing=True)
    def EncodeCredential(self, request: Any, context: grpc.ServicerContext) -> Any:
        # No card needs encoding here and there are no encoders (SyncEncoders is empty).
        raise refused("encoder_not_online", f"json-doors has no encoders ({request.encoder_external_id!r})")

    @rpc(changing=True)
    def UnlockEntrance(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.reference_id:
            raise invalid("reference_id is required")
        with self.store.edit() as state:
            if find(state["unlocks"], reference_id=request.reference_id) is not None:
                # A retry of an unlock already done: do not open the door a second time.
                return self.pb.connector.UnlockEntranceResponse(outcome=self._outcome(False))
            door = find(state["doors"], external_id=request.entrance_external_id)
            if door is None:
                raise not_found(f"entrance {request.entrance_external_id} does not exist")
            if not door.get("can_unlock_with_cloud_key"):
                raise refused("remote_unlock_not_supported", f"{door['display_name']} cannot be unlocked remotely")
            state["unlocks"].append({
                "reference_id": request.reference_id,
                "entrance_external_id": door["external_id"],
                "user_external_id": request.user_external_id,
                "at": timestamp_now(),
            })
        return self.pb.connector.UnlockEntranceResponse(outcome=self._outcome(True))

    # --- 5. Reading back -----------------------------------------------------------------------------------

    @rpc(changing=False)
    def ReadBackState(self, request: Any, context: grpc.ServicerContext) -> Any:
        c = self.pb.connector
        if request.object_kind == c.OBJECT_KIND_UNSPECIFIED:
            raise invalid("object_kind is required")
        if not (request.external_id or request.reference_id):
            raise invalid("external_id or reference_id is required")
        state = self.store.read()
        if request.object_kind == c.OBJECT_KIND_USER:
            user = self._find_by_ids(state["users"], request.external_id, request.reference_id)
            if user is None:
                return c.ReadBackStateResponse(exists=False)
            entrances = [e for a in state["access"] if a.get("user_external_id") == user["external_id"]
                         for e in a.get("entrance_external_ids", [])]
            return c.ReadBackStateResponse(exists=True, user=c.ProviderUserState(
                external_id=user["external_id"],
                reference_id=user.get("reference_id") or "",
                full_name=user.get("full_name") or "",
                email_address=user.get("email_address") or "",
                phone_number=user.get("phone_number") or "",
                access_schedule=schedule_from_json(self.pb, user.get("access_schedule")),
                is_suspended=False,
                entrance_external_ids=list(dict.fromkeys(entrances)),
            ))
        cred = self._find_by_ids(state["credentials"], request.external_id, request.reference_id)
        if cred is None:
            return c.ReadBackStateResponse(exists=False)
        mode = {v: k for k, v in MODE_NAMES.items()}[cred["mode"]]
        return c.ReadBackStateResponse(exists=True, credential=c.ProviderCredentialState(
            external_id=cred["external_id"],
            reference_id=cred.get("reference_id") or "",
            user_external_id=cred.get("user_external_id") or "",
            mode=self.pb.common.AccessMethodMode.Value(mode),
            code=cred.get("code") or "",
            card_number=cred.get("card_number") or "",
            entrance_external_ids=cred.get("entrance_external_ids", []),
            schedule=schedule_from_json(self.pb, cred.get("schedule")),
            is_issued=True,
            is_card_encoding_required=False,
        ))

    # --- lookups -------------------------------------------------------------------------------------------

    @staticmethod
    def _find_by_ids(items: list[dict[str, Any]], external_id: str, reference_id: str) -> dict[str, Any] | None:
        """By the provider's id when Keygate knows it, else by Keygate's reference."""
        if external_id:
            return find(items, external_id=external_id)
        if reference_id:
            return find(items, reference_id=reference_id)
        return None

    @staticmethod
    def _require_user(state: dict[str, Any], user_external_id: str) -> None:
        if not user_external_id:
            raise invalid("user_external_id is required")
        if find(state["users"], external_id=user_external_id) is None:
            raise not_found(f"user {user_external_id} does not exist")

    @staticmethod
    def _require_doors(state: dict[str, Any], entrance_external_ids: list[str]) -> None:
        for entrance in entrance_external_ids:
            if find(state["doors"], external_id=entrance) is None:
                raise not_found(f"entrance {entrance} does not exist")


def timestamp_now() -> str:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp.ToJsonString()


# --- Authentication: a bearer token on every call ----------------------------------------------------------


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuses every call without `authorization: Bearer <token>` metadata, with UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        if secrets.compare_digest(given, self._expected):
            return continuation(handler_call_details)
        log.info("%s refused: missing or wrong bearer token", handler_call_details.method)
        return self._deny
