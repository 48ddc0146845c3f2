"""Python client of the Temporal State Engine.

- :mod:`temporal_state.v1`: the generated messages and gRPC stubs of package ``temporal_state.v1``.
- :func:`connect` / :class:`Client`: one channel and the six service stubs on it.
- :func:`to_struct` / :func:`to_dict`: ``dict`` <-> ``google.protobuf.Struct`` (states, payloads,
  metadata and schemas travel as Structs), keeping integers integers.

Example::

    from temporal_state import connect, to_dict
    from temporal_state.v1 import instance_service_pb2 as instances

    with connect("127.0.0.1:50051") as client:
        reply = client.instances.GetCurrentState(
            instances.GetCurrentStateRequest(entity_type="player_profile", external_id="player-001"))
        print(to_dict(reply.instance.state))
"""

from temporal_state.client import Client, connect, to_dict, to_struct, to_value

__all__ = ["Client", "connect", "to_dict", "to_struct", "to_value"]
__version__ = "0.1.0"
