"""The raw-insert floor's own work behind the store's HTTP stack, for bench_fhir.py.

POST /fhir takes a Bundle and inserts its resources' JSON raw into ``bench_raw`` (one
table, one transaction) — what ``raw_floor`` does — but through what the store's requests
go through: uvicorn (same workers), FastAPI, the JSON body parsed, the work in the thread
pool, a pooled engine with pre-ping.  No validation, encryption, indexing, policy or audit:
the difference between this and the store is what those cost.

    BENCH_FLOOR_URL=postgresql+psycopg://… uvicorn floor_app:app --app-dir bench
"""

from __future__ import annotations

import os
import uuid

import orjson
from fastapi import FastAPI, Request, Response
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from usmis.kit.db import make_engine

engine = make_engine(os.environ["BENCH_FLOOR_URL"])
app = FastAPI()
INSERT = text("INSERT INTO bench_raw (id, body) VALUES (:id, :body)")


@app.get("/ready")
async def ready() -> Response:
    return Response(status_code=200)


@app.post("/fhir")
async def bundle(request: Request) -> Response:
    body = orjson.loads(await request.body())
    rows = [{"id": str(uuid.uuid4()), "body": orjson.dumps(e["resource"]).decode()}
            for e in body["entry"]]

    def work() -> None:
        with engine.begin() as c:
            c.execute(INSERT, rows)

    await run_in_threadpool(work)
    return Response(b'{"resourceType":"Bundle","type":"transaction-response"}',
                    media_type="application/fhir+json")
