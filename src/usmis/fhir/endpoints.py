"""HTTP endpoints of the fhir domain."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
