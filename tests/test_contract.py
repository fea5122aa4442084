"""The contract suite over every backend of tests/backends.py, under asyncio
and trio (backends marked ``asyncio_only`` skip trio)."""

from __future__ import annotations

import pytest

from backends import BACKENDS
from smartchat_core.testing.backends import Backend
from smartchat_core.testing.contract import *  # noqa: F403


@pytest.fixture(params=BACKENDS, ids=[backend.name for backend in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    selected: Backend = request.param
    return selected
