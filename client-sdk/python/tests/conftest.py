"""The server the tests talk to: SERVER_ADDR (host:port), set by client-sdk/rust/tests/python_sdk.rs,
which starts a real server on a fresh database, installs this package and runs pytest."""

import os

import pytest


@pytest.fixture(scope="session")
def server_addr() -> str:
    addr = os.environ.get("SERVER_ADDR")
    if not addr:
        pytest.fail(
            "SERVER_ADDR is not set: run `cargo test -p temporal-state-client --test python_sdk`, "
            "or start a server on a fresh database and export SERVER_ADDR=host:port"
        )
    return addr
