"""The daemon's garbage-collector policy (crisisbot/gc_policy.py): the start-up heap is
frozen out of the full collections' sight, and a reload lets the old configuration go."""

from __future__ import annotations

import gc
import weakref

import pytest

from crisisbot.gc_policy import settle


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector can free it


@pytest.fixture(autouse=True)
def unfrozen():
    yield
    gc.unfreeze()  # the rest of the test session keeps its ordinary collector


def test_settle_collects_leftovers_then_freezes_what_is_alive() -> None:
    leftover = weakref.ref(Node())  # garbage already, waiting for a collection
    alive = Node()
    settle()
    assert leftover() is None
    assert gc.get_freeze_count() > 0
    assert not any(o is alive for o in gc.get_objects(generation=2))  # frozen: out of every pass


def test_a_reload_lets_what_was_frozen_and_is_now_garbage_be_collected() -> None:
    old_config = Node()
    gone = weakref.ref(old_config)
    settle()
    del old_config
    gc.collect()
    assert gone() is not None  # frozen: a full collection does not see it
    settle(reloaded=True)
    assert gone() is None
    assert gc.get_freeze_count() > 0
