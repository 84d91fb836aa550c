"""A protoc plugin that makes grpcio's Python stubs (`*_pb2_grpc.py`) with grpcio-tools.

grpcio-tools carries its gRPC generator inside its own protoc, not as a plugin program, so
`buf generate` cannot call it as a plugin directly. This is that plugin: it reads the
CodeGeneratorRequest, hands the descriptors to grpcio-tools' protoc (`--descriptor_set_in`,
`--grpc_python_out`), and answers with the files it wrote. Run with the interpreter of
examples/.venv (see buf.gen.yaml).
"""

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse()
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    with tempfile.TemporaryDirectory() as tmp:
        fds = descriptor_pb2.FileDescriptorSet(file=request.proto_file)
        fds_path = Path(tmp, "descriptors.pb")
        fds_path.write_bytes(fds.SerializeToString())
        out = Path(tmp, "out")
        out.mkdir()
        args = ["protoc", f"--descriptor_set_in={fds_path}", f"--grpc_python_out={out}"]
        if request.parameter:
            args.append(f"--grpc_python_opt={request.parameter}")
        code = protoc.main(args + list(request.file_to_generate))
        if code != 0:
            response.error = f"grpc_tools.protoc exited with {code}"
        else:
            for path in sorted(out.rglob("*")):
                if path.is_file():
                    f = response.file.add()
                    f.name = path.relative_to(out).as_posix()
                    f.content = path.read_text()
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
