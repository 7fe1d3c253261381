"""Fixtures of the store tests: counting tables and an empty store on them."""

from __future__ import annotations

import pytest

from dkv.mvcc import MvccStore
from tests.mvcc.helpers import CountingTables


@pytest.fixture
def tables() -> CountingTables:
    return CountingTables()


@pytest.fixture
def store(tables) -> MvccStore:
    return MvccStore(tables)
