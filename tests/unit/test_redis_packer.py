"""``router.redis_store._Packer``: the bytes redis-py's own packer would send, in one C call."""

from __future__ import annotations

import pytest
from redis._parsers.encoders import Encoder
from redis.connection import HiredisRespSerializer, PythonRespSerializer
from redis.exceptions import DataError

from router.redis_store import _PACKER, _PackedConnection, _PackedSSLConnection, single_client


def _redis_py(*args: object) -> bytes:
    """What redis-py's default packer sends for ``args``."""
    encoder = Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]
    python = PythonRespSerializer(6000, encoder.encode)
    packer = HiredisRespSerializer(python.pack, encoder.encode)  # type: ignore[no-untyped-call]
    return b"".join(packer.pack(*args))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "ab12", 2, "router:{acme}:agent:a1", "κλειδί", b"raw\x00bytes", "", "a b"),
        ("HSET", "k", "f", 0, "g", -5, "h", 10**20, "i", 1.5, "j", 1e-7, "l", 2.0**60),
        ("PING",),
        ("XADD", "s", "MAXLEN", "~", 1000, "*", "event", "{}" * 5000),  # past the cutoff
        ("CLIENT SETNAME", "replica-1"),  # a command name of two words
        ("SET", "k", memoryview(b"view")),  # hiredis does not take it: redis-py's way
    ],
)
def test_the_bytes_are_redis_pys(args: tuple[object, ...]) -> None:
    assert b"".join(_PACKER.pack(*args)) == _redis_py(*args)


@pytest.mark.parametrize("bad", [True, None, object()])
def test_what_redis_py_refuses_is_refused_as_it_does(bad: object) -> None:
    with pytest.raises(DataError):
        _PACKER.pack("SET", "k", bad)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0", "unix:///tmp/no-such.sock"]
)
def test_the_service_client_packs_with_it_over_tcp_tls_and_unix_sockets(url: str) -> None:
    client = single_client(url, decode_responses=True)
    try:
        connection = client.connection_pool.make_connection()  # built, never connected
        assert getattr(connection, "_command_packer", None) is _PACKER
    finally:
        client.close()


@pytest.mark.parametrize("connection_class", [_PackedConnection, _PackedSSLConnection])
def test_the_cluster_nodes_connection_classes_pack_with_it(connection_class: type) -> None:
    connection = connection_class(host="127.0.0.1", port=1)  # built, never connected
    assert getattr(connection, "_command_packer", None) is _PACKER
