"""The contract suite over every entry of the backend table (tests/backends.py),
under asyncio and trio (backends marked ``asyncio_only`` skip trio)."""

from __future__ import annotations

import pytest

from backends import BACKEND_NAMES, backend_for
from smartchat_core.testing.backends import Backend
from smartchat_core.testing.contract import *  # noqa: F403


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> Backend:
    return backend_for(request.param, request)
