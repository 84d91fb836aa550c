"""The "access system" itself: doors, users, access, credentials and an unlock log in one JSON file.

A real connector talks to a vendor's API here; json-doors keeps the vendor's side in a file, so that the
connector has something real to change and a test can read (and edit) what the "provider" holds.

The file is read again on every call and written back atomically (a temporary file in the same directory,
flushed to disk, then renamed over the old one), so a reader never sees half a file and the file can be
edited by hand while the connector is stopped. One lock serialises the calls of this process. Two connector
processes must not share one file.

This module knows nothing about gRPC or protobuf: it deals in plain dicts and lists (the JSON schema is
described in README.md).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

SCHEMA_VERSION = 1

State = dict[str, Any]


def _door(external_id: str, display_name: str, *, cloud_key: bool = True) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "display_name": display_name,
        "can_unlock_with_card": True,
        "can_unlock_with_code": True,
        "can_unlock_with_mobile_key": True,
        "can_unlock_with_cloud_key": cloud_key,
        "can_belong_to_reservation": False,
    }


def default_state() -> State:
    """The site a new state file starts with: four doors and nothing else."""
    return {
        "schema_version": SCHEMA_VERSION,
        # The Keygate access system this site belongs to, bound by the first call (see server.py).
        "acs_system_id": None,
        "doors": [
            _door("door-front", "Front Door"),
            _door("door-back", "Back Door"),
            _door("door-room-1", "Room 1"),
            # One door without remote unlock, so `remote_unlock_not_supported` can be seen.
            _door("door-room-2", "Room 2", cloud_key=False),
        ],
        "users": [],
        "access": [],
        "credentials": [],
        "unlocks": [],
    }


class Store:
    """The JSON state file, with a lock around every read-modify-write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def ensure_exists(self) -> None:
        """Creates the file with the default site when it is missing."""
        with self._lock:
            if not self.path.exists():
                self._write(default_state())

    def read(self) -> State:
        """A snapshot of the state, for calls that change nothing."""
        with self._lock:
            return self._load()

    @contextlib.contextmanager
    def edit(self) -> Iterator[State]:
        """Yields the state to change in place; writes it back if it changed and no exception was raised.

        with store.edit() as state:
            state["users"].append({...})
        """
        with self._lock:
            state = self._load()
            before = copy.deepcopy(state)
            yield state
            if state != before:
                self._write(state)

    # --- file handling ---------------------------------------------------------------------------------

    def _load(self) -> State:
        if not self.path.exists():
            state = default_state()
            self._write(state)
            return state
        with self.path.open(encoding="utf-8") as f:
            state = json.load(f)
        # Tolerate a hand-edited file that dropped a list: fill in what is missing.
        for key, value in default_state().items():
            if key != "doors":
                state.setdefault(key, value)
        state.setdefault("doors", [])
        return state

    def _write(self, state: State) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(state, f, indent=2, sort_keys=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


# --- lookups shared by the RPCs --------------------------------------------------------------------------


def find(items: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    """The first item whose fields equal every `match` value, or None.

    find(state["users"], reference_id="acs_user_1")
    """
    for item in items:
        if all(item.get(k) == v for k, v in match.items()):
            return item
    return None
