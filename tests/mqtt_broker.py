"""The test machine's Mosquitto (127.0.0.1:1883), and the skip used where it is absent."""

from __future__ import annotations

import socket

import pytest

BROKER = ("127.0.0.1", 1883)


def broker_reachable() -> bool:
    try:
        socket.create_connection(BROKER, timeout=1).close()
        return True
    except OSError:
        return False


needs_broker = pytest.mark.skipif(not broker_reachable(),
                                  reason="no MQTT broker on 127.0.0.1:1883 (install and start mosquitto)")
