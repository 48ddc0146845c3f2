"""Package ``temporal_state.v1``: messages (``*_pb2``) and gRPC stubs (``*_pb2_grpc``).

Every other module of this folder is generated from ``proto/temporal_state/v1/*.proto`` by
``scripts/generate-clients.sh``; do not edit them by hand (``scripts/check-generated.sh`` fails
when they differ from a fresh generation). This file is not generated.
"""
