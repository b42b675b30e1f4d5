"""The test bed's free ports: bindable, and outside the kernel's ephemeral range so that
outgoing connections of concurrent tests cannot take them before a server binds them."""

from __future__ import annotations

import socket

from tokenscale_testbed.prometheus import _ephemeral_floor, free_port


def test_a_free_port_is_bindable_and_below_the_ephemeral_range() -> None:
    floor = _ephemeral_floor()
    ports = {free_port() for _ in range(20)}
    assert len(ports) > 1  # drawn at random, not one fixed port
    for port in ports:
        assert 10000 <= port < floor
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
            sock.listen()
