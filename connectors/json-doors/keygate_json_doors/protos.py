"""Loads Keygate's .proto files at run time, so no generated code is committed or kept in step.

`grpc.protos_and_services` (from grpcio-tools) compiles a .proto found on `sys.path` into Python modules in
memory, the same ones `protoc --python_out --grpc_python_out` would write. The connector contract imports
`keygate/v1/access_systems.proto` and `keygate/v1/common.proto`; they are loaded with it and can be fetched
again with `grpc.protos(...)` (the modules are cached, so every call returns the same classes).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

CONNECTOR_PROTO = "keygate/connector/v1/connector.proto"


def default_proto_dir() -> Path:
    """`<repo>/proto`, found from this file: <repo>/connectors/json-doors/keygate_json_doors/protos.py."""
    return Path(__file__).resolve().parents[3] / "proto"


class Protos(NamedTuple):
    connector: ModuleType  # keygate.connector.v1 messages (connector_pb2)
    services: ModuleType  # the service: Servicer, Stub, add_..._to_server (connector_pb2_grpc)
    systems: ModuleType  # keygate.v1 access_systems (CapabilityDescriptor, PermissionModel, ...)
    common: ModuleType  # keygate.v1 common (AccessMethodMode, AccessSchedule)


def load(proto_dir: str | Path | None = None) -> Protos:
    proto_dir = Path(proto_dir) if proto_dir else default_proto_dir()
    if not (proto_dir / CONNECTOR_PROTO).is_file():
        raise SystemExit(
            f"keygate-json-doors: {proto_dir / CONNECTOR_PROTO} not found; "
            "pass --proto-dir <keygate repository>/proto"
        )
    if str(proto_dir) not in sys.path:
        sys.path.append(str(proto_dir))

    import grpc  # imported here so that --help works without loading the protos

    connector, services = grpc.protos_and_services(CONNECTOR_PROTO)
    systems = grpc.protos("keygate/v1/access_systems.proto")
    common = grpc.protos("keygate/v1/common.proto")
    return Protos(connector, services, systems, common)
