"""Pure oversight logic: case life cycle, feedback-adjusted likelihood, pseudonyms.

No database and no web framework here, so it is tested on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from usmis.kit.errors import Conflict

# open → investigating → confirmed | cleared; a case may also be closed straight from open
# (an obvious false alarm, or an admitted overpayment).  Closed cases do not reopen: a new
# case is opened instead, so feedback already given is never rewritten.
CASE_TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"investigating", "confirmed", "cleared"}),
    "investigating": frozenset({"confirmed", "cleared"}),
    "confirmed": frozenset(),
    "cleared": frozenset(),
}
CLOSED = frozenset({"confirmed", "cleared"})

# Pseudo-count of the prior in feedback blending: ten closed cases move a rule's
# likelihood halfway from its metadata value toward the observed confirmation rate.
FEEDBACK_PRIOR_WEIGHT = 10.0


def check_transition(current: str, new: str) -> None:
    if new not in CASE_TRANSITIONS.get(current, frozenset()):
        raise Conflict(f"case status cannot change from {current} to {new}",
                       expression=["status"])


@dataclass(frozen=True)
class RuleFeedback:
    rule_id: str
    confirmed: int
    cleared: int

    @property
    def closed(self) -> int:
        return self.confirmed + self.cleared

    def adjust(self, likelihood: float) -> float:
        """Blend the rule's own likelihood with what investigators found (beta-binomial)."""
        k = FEEDBACK_PRIOR_WEIGHT
        return (self.confirmed + likelihood * k) / (self.closed + k)


def load_or_create_key(path: Path) -> bytes:
    """The oversight pseudonymisation key: its own file (mode 600), never the vault's key."""
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex())
    return key


def pseudonym(key: bytes, person_key: str) -> str:
    """Keyed HMAC-SHA256 of the patient index's person key, 32 hex characters."""
    return hmac.new(key, person_key.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
