"""A protoc plugin (``protoc-gen-grpc_python``) for ``buf generate``, built on grpcio-tools.

grpcio-tools compiles its gRPC Python generator into its bundled protoc instead of shipping a
``protoc-gen-grpc_python`` executable, so buf cannot run it as a plugin directly. This script is
that executable: it reads the ``CodeGeneratorRequest`` buf sends on stdin, hands the request's
descriptors to grpcio-tools' protoc (``--descriptor_set_in``, so nothing is parsed twice and no
``.proto`` path is needed), and answers with a ``CodeGeneratorResponse`` holding the generated
``*_pb2_grpc.py`` files. Everything comes from PyPI (``grpcio-tools``); no network at run time.

Run by buf as configured in ``buf.gen.yaml``::

    local: [tools/.venv/bin/python, client-sdk/python/codegen/protoc_gen_grpc_python.py]
"""

import os
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    response = plugin_pb2.CodeGeneratorResponse()
    # proto3 `optional` fields are fine for the gRPC generator: it only looks at services.
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    with tempfile.TemporaryDirectory(prefix="protoc-gen-grpc_python-") as tmp:
        fds = descriptor_pb2.FileDescriptorSet(file=request.proto_file)
        fds_path = os.path.join(tmp, "request.binpb")
        with open(fds_path, "wb") as f:
            f.write(fds.SerializeToString())
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        args = ["grpc_tools.protoc", f"--descriptor_set_in={fds_path}", f"--grpc_python_out={out}"]
        if request.parameter:
            args.append(f"--grpc_python_opt={request.parameter}")
        args.extend(request.file_to_generate)
        if protoc.main(args) != 0:
            response.error = "grpc_tools.protoc failed (see stderr)"
            return response
        for root, _dirs, files in os.walk(out):
            for name in sorted(files):
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as f:
                    response.file.add(name=os.path.relpath(path, out), content=f.read())
    return response


def main() -> None:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(request).SerializeToString())


if __name__ == "__main__":
    main()
