"""Fixtures for the integration suite: the running test stack and fresh
accounts. The stack itself is started by deploy/dev/stack.sh test."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from xmpptest import Stack  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    s = Stack.from_environment()
    missing = [b for b in ("sb-router", "sb-c2s", "sb-sm", "sbctl")
               if not os.access(os.path.join(s.bin, b), os.X_OK)]
    if missing:
        pytest.fail("binaries missing: %s (run `make test`)" % ", ".join(missing))
    return s


@pytest.fixture
def new_user(stack):
    """Factory: new_user(prefix='u') → (bare JID, password) of a fresh account."""
    return stack.add_user


@pytest.fixture
def two_users(stack):
    return stack.add_user("alice"), stack.add_user("bob")
