"""Property-based: whatever bytes arrive, the listener stays up and answers AE/AR or closes."""

from __future__ import annotations

import socket

from hl7.client import MLLPClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from .conftest import Listener
from .factories import make_adt

SB, EB = b"\x0b", b"\x1c\r"


def _exchange(port: int, payload: bytes) -> bytes:
    """Send bytes, half-close, read whatever comes back until the listener closes (a
    reset is a close; a listener that neither answers nor closes within 5 s fails)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return out


def _acks_are_refusals(reply: bytes) -> None:
    for frame in reply.split(EB):
        frame = frame.strip(SB + b"\r\n")
        if frame:
            assert b"MSA|AR" in frame or b"MSA|AE" in frame, frame[:200]


_valid = make_adt(control="G0").encode()
_sent = 0

garbage = st.one_of(
    st.binary(max_size=2000),  # random bytes, maybe no frame at all
    st.binary(max_size=500).map(lambda b: SB + b + EB),  # framed garbage
    st.binary(max_size=500).map(lambda b: SB + b"MSH|^~\\&|his-test|" + b + EB),  # broken MSH
    st.integers(1, len(_valid) - 1).map(lambda n: SB + _valid[:n]),  # truncated frame
    st.sampled_from(["utf-16", "cp1251", "koi8-r", "utf-32"]).map(  # wrong encodings
        lambda enc: SB + make_adt(control="E1").encode(enc) + EB),
)
_FAST = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])


@_FAST
@given(payload=garbage)
def test_listener_refuses_garbage_or_closes(
    mllp: Listener, hl7_sources: dict[str, str], payload: bytes
) -> None:
    _acks_are_refusals(_exchange(mllp.port, payload))
    # and it is still up: the next sender's message is taken
    global _sent
    _sent += 1
    with MLLPClient("127.0.0.1", mllp.port) as client:
        assert b"MSA|AA" in client.send_message(make_adt(control=f"UP{_sent}"))


@_FAST
@given(n=st.integers(20, len(_valid) - 1))
def test_cut_messages_get_a_real_ack(
    mllp: Listener, hl7_sources: dict[str, str], n: int
) -> None:
    # A message cut at a segment boundary may still be valid (AA); elsewhere AE/AR.
    reply = _exchange(mllp.port, SB + _valid[:n] + EB)
    assert reply.count(b"MSA|") == 1
    assert any(code in reply for code in (b"MSA|AA", b"MSA|AE", b"MSA|AR"))


def test_listener_still_accepts_after_garbage(
    mllp: Listener, hl7_sources: dict[str, str], engine: Engine
) -> None:
    for junk in (b"\x00" * 100, SB + b"\xff\xfe" + EB, SB * 10, EB * 10):
        _exchange(mllp.port, junk)
    with MLLPClient("127.0.0.1", mllp.port) as client:
        assert b"MSA|AA" in client.send_message(make_adt(control="AFTER"))
