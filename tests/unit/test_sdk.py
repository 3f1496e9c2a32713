"""crisisbot.sdk is the plugin API: every name it promises exists and comes from a shared module,
never from a concrete trigger or connector (a plugin must not depend on another plugin)."""

from __future__ import annotations

import crisisbot.sdk as sdk

SHARED = ("crisisbot.", "connectors.base", "triggers.base", "triggers.state")


def test_every_promised_name_exists_and_is_shared():
    for name in sdk.__all__:
        value = getattr(sdk, name)
        if isinstance(value, type):  # not the Annotated aliases (Seconds, Identifier…)
            assert value.__module__.startswith(SHARED), f"{name} comes from {value.__module__}"
    assert len(set(sdk.__all__)) == len(sdk.__all__)
