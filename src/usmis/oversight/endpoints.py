"""HTTP endpoints of the oversight domain."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
