"""The backend table of this test suite: every entry runs the contract suite
and the state machine.  Server-backed entries are added by their modules."""

from __future__ import annotations

from smartchat_core.testing.backends import MEMORY, Backend

BACKENDS: list[Backend] = [MEMORY]
