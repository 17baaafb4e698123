"""Envelope encryption and blind indexes over the real local key file."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from usmis.kit.crypto import Keyring, KeyUnavailable, LocalKeyFile


def test_key_file_is_created_once_with_mode_600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keys.json"
    files: list[LocalKeyFile] = []

    def make() -> None:
        files.append(LocalKeyFile(path))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len({f.current_kek_id() for f in files}) == 1  # one file won, whole
    assert not [p for p in path.parent.iterdir() if p.name != "keys.json"]


def test_seal_open_roundtrip_and_binding(tmp_path: Path) -> None:
    ring = Keyring(LocalKeyFile(tmp_path / "k.json"))
    sealed = ring.seal(b'{"resourceType":"Patient"}', b"Patient/1")
    assert b"Patient" not in sealed.ciphertext
    assert "Sealed(" in repr(sealed)
    assert sealed.dek.hex() not in repr(sealed)
    assert ring.open(sealed.kek_id, sealed.dek, sealed.ciphertext, b"Patient/1").startswith(b"{")
    with pytest.raises(InvalidTag):  # ciphertext moved to another row
        ring.open(sealed.kek_id, sealed.dek, sealed.ciphertext, b"Patient/2")
    other = ring.seal(b'{"resourceType":"Patient"}', b"Patient/1")
    assert other.dek != sealed.dek  # a fresh data key per record


def test_blind_index_is_keyed_and_per_purpose(tmp_path: Path) -> None:
    a = Keyring(LocalKeyFile(tmp_path / "a.json"))
    b = Keyring(LocalKeyFile(tmp_path / "b.json"))
    v = "900101300123"
    assert a.blind_index("identifier", v) == a.blind_index("identifier", f" {v} ")
    assert a.blind_index("identifier", v) != a.blind_index("phone", v)
    assert a.blind_index("identifier", v) != b.blind_index("identifier", v)
    assert len(a.blind_index("identifier", v)) == 32
    assert v not in a.blind_index("identifier", v)


def test_rotation_is_seen_by_other_processes_views(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    server_view = LocalKeyFile(path)
    ring = Keyring(server_view)
    sealed = ring.seal(b"x", b"a")
    admin_view = LocalKeyFile(path)
    new = admin_view.add_kek()
    # the server meets a row wrapped under a KEK it has not loaded yet: it re-reads
    rewrapped = Keyring(admin_view).rewrap(sealed.kek_id, sealed.dek, new)
    assert ring.open(new, rewrapped, sealed.ciphertext, b"a") == b"x"
    admin_view.purge([sealed.kek_id])
    with pytest.raises(KeyUnavailable):
        Keyring(LocalKeyFile(path)).open(sealed.kek_id, sealed.dek, sealed.ciphertext, b"a")
