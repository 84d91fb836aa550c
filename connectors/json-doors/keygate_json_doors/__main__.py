"""Command line: `keygate-json-doors --state doors.json --listen 127.0.0.1:50070 [--token s3cret]`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

from . import __version__


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="keygate-json-doors",
        description="Keygate's reference access-system connector: a site of doors kept in one JSON file.",
    )
    p.add_argument("--state", required=True, type=Path,
                   help="the JSON state file; created with a default site of four doors when missing")
    p.add_argument("--listen", default="127.0.0.1:50070",
                   help="host:port to serve gRPC on (port 0 picks a free one; default %(default)s)")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", help="require `authorization: Bearer <token>` on every call")
    auth.add_argument("--token-file", type=Path, help="read the token from this file (surrounding whitespace dropped)")
    p.add_argument("--proto-dir", type=Path,
                   help="Keygate's proto/ directory (default: <repo>/proto, found from the package source)")
    p.add_argument("--slow-ms", type=int, default=0, metavar="N",
                   help="test fault: sleep N ms before answering every call")
    p.add_argument("--fail-first", type=int, default=0, metavar="N",
                   help="test fault: answer UNAVAILABLE to the first N changing calls, changing nothing")
    p.add_argument("--log-level", default="WARNING", help="stderr log level (INFO logs every call)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = p.parse_args(argv)
    if args.slow_ms < 0 or args.fail_first < 0:
        p.error("--slow-ms and --fail-first must not be negative")
    if args.token_file:
        args.token = args.token_file.read_text(encoding="utf-8").strip()
        if not args.token:
            p.error(f"--token-file {args.token_file} is empty")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="keygate-json-doors %(levelname)s %(message)s")

    import grpc

    from . import protos
    from .server import BearerTokenInterceptor, Connector
    from .store import Store

    pb = protos.load(args.proto_dir)
    store = Store(args.state)
    store.ensure_exists()
    connector = Connector(pb, store, slow_ms=args.slow_ms, fail_first=args.fail_first)

    interceptors = [BearerTokenInterceptor(args.token)] if args.token else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=interceptors)
    pb.services.add_AccessSystemConnectorServiceServicer_to_server(connector, server)
    port = server.add_insecure_port(args.listen)
    if port == 0:
        print(f"keygate-json-doors: cannot listen on {args.listen}", file=sys.stderr)
        return 1
    server.start()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    host = args.listen.rsplit(":", 1)[0]
    print(f"listening on {host}:{port}", flush=True)  # the one line a test waits for
    stop.wait()
    server.stop(grace=2).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
