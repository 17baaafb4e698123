"""The MLLP listener, driven by the real HL7 sender (python-hl7's MLLPClient)."""

from __future__ import annotations

import socket

import hl7
from hl7.client import MLLPClient
from sqlalchemy import Engine, select

from usmis.ingest import tables as t
from usmis.ingest.model import peer_allowed
from usmis.kit.db import transaction

from .conftest import Listener
from .factories import make_adt, make_oru


def _ack(reply: bytes) -> hl7.Message:
    body = reply.strip(b"\x0b\x1c\r")
    return hl7.parse(body.decode())


def _inbox(engine: Engine) -> list[dict]:
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(t.inbox).order_by(t.inbox.c.id))]


def test_accepted_message_is_in_the_inbox_when_acked(
    mllp: Listener, hl7_sources: dict[str, str], engine: Engine
) -> None:
    with MLLPClient("127.0.0.1", mllp.port) as client:
        ack = _ack(client.send_message(make_adt(control="C1")))
    assert str(ack.segment("MSA")[1]) == "AA"
    assert str(ack.segment("MSA")[2]) == "C1"
    rows = _inbox(engine)
    assert [(r["source_id"], r["status"], r["message_id"]) for r in rows] == [
        ("his-test", "pending", "C1")]
    # the raw message is sealed: no plaintext name in the stored bytes
    assert "Тестов".encode() not in rows[0]["content"]


def test_many_messages_on_several_connections(
    mllp: Listener, hl7_sources: dict[str, str], engine: Engine
) -> None:
    clients = [MLLPClient("127.0.0.1", mllp.port) for _ in range(3)]
    try:
        for i in range(30):
            reply = clients[i % 3].send_message(make_adt(control=f"M{i}", patient=f"P{i}"))
            assert str(_ack(reply).segment("MSA")[1]) == "AA"
    finally:
        for c in clients:
            c.close()
    assert len(_inbox(engine)) == 30


def test_same_message_twice_is_stored_once(
    mllp: Listener, hl7_sources: dict[str, str], engine: Engine
) -> None:
    with MLLPClient("127.0.0.1", mllp.port) as client:
        for _ in range(2):
            assert str(_ack(client.send_message(make_adt())).segment("MSA")[1]) == "AA"
    rows = _inbox(engine)
    assert len(rows) == 1
    assert rows[0]["duplicates"] == 1


def test_malformed_message_gets_ae_with_err_and_a_dead_letter(
    mllp: Listener, hl7_sources: dict[str, str], engine: Engine
) -> None:
    with MLLPClient("127.0.0.1", mllp.port) as client:
        ack = _ack(client.send_message(make_adt(birth="19871301", control="BAD1")))
    assert str(ack.segment("MSA")[1]) == "AE"
    assert str(ack.segment("ERR")[2]) == "PID^1^7"
    with engine.connect() as c:
        dl = c.execute(select(t.dead_letter)).one()._mapping
    assert (dl["rule"], dl["field"], dl["source_id"]) == ("date-format", "PID-7", "his-test")
    assert _inbox(engine)[0]["status"] == "dead"


def test_unknown_or_unauthorised_source_is_refused_and_not_stored(
    mllp: Listener, hl7_sources: dict[str, str], engine: Engine
) -> None:
    with MLLPClient("127.0.0.1", mllp.port) as client:
        unknown = _ack(client.send_message(make_adt(source="nobody")))
        no_secret = _ack(client.send_message(make_oru()))
        with_secret = _ack(client.send_message(make_oru().replace("||ORU", "|s3cret-lab|ORU")))
    assert str(unknown.segment("MSA")[1]) == "AR"
    assert str(no_secret.segment("MSA")[1]) == "AR"
    assert str(with_secret.segment("MSA")[1]) == "AA"
    assert [r["source_id"] for r in _inbox(engine)] == ["lis-test"]


def test_disabled_source_is_refused(
    mllp: Listener, hl7_sources: dict[str, str], engine: Engine
) -> None:
    from usmis.ingest import sources

    with transaction(engine) as conn:
        sources.set_enabled(conn, "his-test", False)
    with MLLPClient("127.0.0.1", mllp.port) as client:
        assert str(_ack(client.send_message(make_adt())).segment("MSA")[1]) == "AR"
    assert _inbox(engine) == []


def test_garbage_and_truncated_frames_do_not_stop_the_listener(
    mllp: Listener, hl7_sources: dict[str, str], engine: Engine
) -> None:
    with socket.create_connection(("127.0.0.1", mllp.port), timeout=5) as s:
        s.sendall(b"hello world\r\n\x00\xff")  # outside any frame: skipped
        s.sendall(b"\x0bnot hl7\x1c\r")  # a frame with no MSH: AR
        reply = s.recv(4096)
        assert b"MSA|AR" in reply
        s.sendall(b"\x0bMSH|^~\\&|his-test|x|")  # truncated frame, then close
    with MLLPClient("127.0.0.1", mllp.port) as client:
        assert str(_ack(client.send_message(make_adt())).segment("MSA")[1]) == "AA"


def test_unreadable_msh_is_kept_for_the_source_its_connection_authenticated_as(
    mllp: Listener, hl7_sources: dict[str, str], engine: Engine
) -> None:
    """A frame whose MSH cannot be read names no source: on a connection that already
    authenticated as one it is that source's dead letter (nothing is lost); as the first
    frame of a connection it is refused and not stored."""
    broken = make_adt(control="BROKEN").replace("|", "#", 3)  # as the synthetic nation does
    with MLLPClient("127.0.0.1", mllp.port) as client:
        first = _ack(client.send_message(broken))
    with MLLPClient("127.0.0.1", mllp.port) as client:
        assert str(_ack(client.send_message(make_adt(control="OK1"))).segment("MSA")[1]) == "AA"
        kept = _ack(client.send_message(broken))
    assert str(first.segment("MSA")[1]) == "AR"
    assert str(kept.segment("MSA")[1]) == "AR"
    rows = _inbox(engine)
    assert [(r["source_id"], r["status"]) for r in rows] == [
        ("his-test", "pending"), ("his-test", "dead")]
    with engine.connect() as c:
        dl = c.execute(select(t.dead_letter)).one()._mapping
    assert (dl["rule"], dl["source_id"], dl["inbox_id"]) == ("structure", "his-test",
                                                             rows[1]["id"])


def test_the_peer_allow_list_takes_addresses_and_networks() -> None:
    allow = ["10.1.2.3", "192.168.0.0/24", "not-an-address"]
    assert peer_allowed("10.1.2.3", allow)
    assert peer_allowed("192.168.0.77", allow)
    assert not peer_allowed("192.168.1.1", allow)
    assert not peer_allowed("garbage", allow)
    assert not peer_allowed("10.1.2.3", [])
    allow.append("192.168.1.0/24")  # the list as it is now, never a remembered answer
    assert peer_allowed("192.168.1.1", allow)
