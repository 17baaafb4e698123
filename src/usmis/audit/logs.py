"""Keep personal data out of application logs that we do not write ourselves.

Our own log calls carry opaque keys and counts only.  The web server's access log is the
exception: it prints the request line, and a FHIR search's query string may carry an IIN
(``Patient?identifier=…|900101300123``), a name or a phone.  :func:`install_redaction`
puts a filter on uvicorn's access logger that keeps parameter names and drops values.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl


def redact_target(target: str) -> str:
    """``/fhir/Patient?identifier=x&name=y`` → ``/fhir/Patient?identifier=*&name=*``."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    names = [k for k, _ in parse_qsl(query, keep_blank_values=True)]
    return f"{path}?{'&'.join(f'{n}=*' for n in names)}"


class RedactQueryStrings(logging.Filter):
    """uvicorn.access records: args = (client, method, path+query, http version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_target(args[2]), *args[3:])
        return True


_FILTER = RedactQueryStrings()


def install_redaction() -> None:
    """Idempotent: add the filter to uvicorn's access logger (and its handlers)."""
    logger = logging.getLogger("uvicorn.access")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
