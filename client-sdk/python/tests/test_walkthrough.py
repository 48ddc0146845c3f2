"""The README's player_profile walk-through through the installed package, against a real server."""

import datetime
import os
import pathlib

import grpc
import pytest

import temporal_state
from temporal_state import connect, to_dict
from temporal_state.v1 import analytics_service_pb2 as analytics
from temporal_state.v1 import entity_type_service_pb2 as entity_types
from temporal_state.v1 import event_service_pb2 as events
from temporal_state.v1 import instance_service_pb2 as instances
from temporal_state.v1 import query_service_pb2 as queries
from temporal_state.v1 import types_pb2

SCHEMA = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "minLength": 3},
        "email": {"type": "string", "format": "email"},
        "score": {"type": "integer", "minimum": 0},
        "level": {"type": "integer", "minimum": 1},
        "achievements": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["username", "email"],
}
ALICE = {"username": "alice", "email": "alice@example.com", "score": 0, "level": 1, "achievements": []}


def test_the_installed_package_is_the_one_tested():
    expected = os.environ.get("TSE_PACKAGE_INSTALLED_IN")
    if expected is None:
        pytest.skip("not run by python_sdk.rs: testing whatever `temporal_state` is importable")
    where = pathlib.Path(temporal_state.__file__).resolve()
    assert pathlib.Path(expected).resolve() in where.parents, where


def test_walkthrough(server_addr):
    with connect(server_addr) as client:
        created_type = client.entity_types.CreateEntityType(
            entity_types.CreateEntityTypeRequest(
                name="player_profile", description="A player of our game", schema=SCHEMA
            )
        ).entity_type
        assert created_type.name == "player_profile"
        assert to_dict(created_type.schema) == SCHEMA

        created = client.instances.CreateInstance(
            instances.CreateInstanceRequest(
                entity_type="player_profile", external_id="player-001", initial_state=ALICE
            )
        )
        instance_id = created.instance.id
        assert created.instance.version == 1
        assert created.event.event_type == "InstanceCreated"

        # A merge patch, only at version 1, with an idempotency key.
        request = events.ApplyEventRequest(
            instance_id=instance_id,
            event_type="ScoreIncreased",
            payload={"score": 150, "level": 2},
            expected_version=1,
            event_id="player-001-score-1",
        )
        applied = client.events.ApplyEvent(request)
        assert applied.event.version == 2
        assert to_dict(applied.state) == {**ALICE, "score": 150, "level": 2}
        # A retry with the same event_id returns the first recording, never a second event.
        request.ClearField("expected_version")
        again = client.events.ApplyEvent(request)
        assert (again.event.id, again.event.version) == ("player-001-score-1", 2)

        current = client.instances.GetCurrentState(
            instances.GetCurrentStateRequest(entity_type="player_profile", external_id="player-001")
        ).instance
        assert current.version == 2
        assert to_dict(current.state)["score"] == 150

        # Time travel.
        at1 = client.queries.GetStateAtVersion(
            queries.GetStateAtVersionRequest(instance_id=instance_id, version=1)
        )
        assert to_dict(at1.state) == ALICE
        now = client.queries.GetStateAtTime(
            queries.GetStateAtTimeRequest(
                instance_id=instance_id, timestamp=datetime.datetime.now(datetime.timezone.utc)
            )
        )
        assert now.version == 2
        diff = client.queries.CompareVersions(
            queries.CompareVersionsRequest(instance_id=instance_id, version1=1, version2=2)
        )
        changes = {c.path: c for c in diff.changes}
        assert changes["/score"].kind == queries.CHANGE_KIND_CHANGED
        assert changes["/score"].old_value.number_value == 0
        assert changes["/score"].new_value.number_value == 150
        history = client.queries.GetHistory(queries.GetHistoryRequest(instance_id=instance_id))
        assert [e.version for e in history.events] == [1, 2]
        assert history.events[1].mode == types_pb2.APPLY_MODE_MERGE_PATCH
        timeline = client.queries.GetFieldTimeline(
            queries.GetFieldTimelineRequest(instance_id=instance_id, field="/score")
        )
        assert [(p.version, p.value.number_value) for p in timeline.points] == [(1, 0), (2, 150)]

        # A state that breaks the schema is refused, naming the path, and nothing is stored.
        with pytest.raises(grpc.RpcError) as refused:
            client.events.ApplyEvent(
                events.ApplyEventRequest(
                    instance_id=instance_id, event_type="ScoreIncreased", payload={"score": -5}
                )
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "/score" in refused.value.details()
        # A stale expected_version is ABORTED, naming the current version.
        with pytest.raises(grpc.RpcError) as conflict:
            client.events.ApplyEvent(
                events.ApplyEventRequest(
                    instance_id=instance_id, event_type="X", payload={}, expected_version=1
                )
            )
        assert conflict.value.code() == grpc.StatusCode.ABORTED
        assert "at version 2" in conflict.value.details()
        assert (
            client.instances.GetInstance(instances.GetInstanceRequest(instance_id=instance_id)).instance.version
            == 2
        )

        summary = client.analytics.GetSummary(analytics.GetSummaryRequest(entity_type="player_profile"))
        assert (summary.instance_count, summary.event_count) == (1, 2)
        assert list(summary.event_types) == ["InstanceCreated", "ScoreIncreased"]
