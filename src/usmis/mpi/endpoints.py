"""HTTP endpoints of the mpi domain."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
