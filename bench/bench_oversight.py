"""Benchmark: the whole oversight rule catalogue over a large synthetic extract.

Workload: an analytical extract written directly in Parquet (the synthetic nation's
generator makes feeds, not extracts, and at 10M claim lines it would take far longer than
the rules): ``--claims`` claim lines (default 10M) for ``claims / 5`` people, with
attachments, capitation payments, stays, dispensations, diagnoses, practitioners,
licences, employments, tariffs and life events, plus a sprinkling of planted anomalies so
every rule has work.
The generation runs in a child process; this process only runs the catalogue, so its peak
RSS is the catalogue's.  Target (issue 7): <= 5 minutes and <= 4 GB on 2 cores.

    .venv/bin/python bench/bench_oversight.py [--claims 10000000] [--dir /tmp/ov-bench]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from usmis.oversight.catalogue import load_catalogue
from usmis.oversight.engine import open_extract, run_rule
from usmis.oversight.extract.writer import Manifest, conform, write_manifest, write_part

START = date(2024, 1, 1)
DAYS = 731
AS_OF = date(2025, 12, 31)
REGIONS = [f"R{i:02d}" for i in range(17)]
VISITS = [("A01.001", 3500, 15), ("A01.005", 5100, 25), ("A01.006", 5100, 25)]
PROCS = [("A03.001", 2200, 20, 2), ("A03.002", 900, 5, 3), ("A03.003", 2700, 15, 2)]
LABS = [("B03.001", 2100, 5), ("B03.002", 4300, 5), ("B03.003", 3100, 5)]
DRUGS = [
    ("A10BA02", 40.0, 3.0, "E11"),
    ("C09AA05", 30.0, 2.0, "I10"),
    ("R03AC02", 900.0, 8.0, "J45"),
    ("N02BE01", 5.0, 8.0, ""),
]
CASES = [(f"K{i:02d}", 150_000 + 20_000 * i) for i in range(10)]
ICD = ["E11.9", "I10", "J45.9", "J06.9", "K29.7", "M54.5"]


def ids(prefix: str, idx: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(idx), pa.string()), "")


def days(off: np.ndarray) -> pa.Array:
    base = np.datetime64(START.isoformat(), "D")
    return pa.array((base + off.astype("timedelta64[D]")).astype("datetime64[D]"))


def pick(rng: np.random.Generator, n: int, options: list[str]) -> pa.Array:
    return pa.array(np.array(options, dtype=object)[rng.integers(0, len(options), n)])


def generate(root: Path, n_claims: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    n_people = max(n_claims // 5, 1000)
    n_poly, n_hosp, n_pharm, n_lab = (
        max(n_people // 1000, 10),
        max(n_people // 7000, 6),
        max(n_people // 4000, 5),
        20,
    )
    staff = 8
    # organisations: polyclinics 0.., hospitals, pharmacies, labs
    org_kind = (
        ["polyclinic"] * n_poly + ["hospital"] * n_hosp + ["pharmacy"] * n_pharm + ["lab"] * n_lab
    )
    n_org = len(org_kind)
    write_part(
        root,
        "organizations",
        conform(
            "organizations",
            {
                "org_id": ids("O", np.arange(n_org)),
                "org_kind": pa.array(org_kind),
                "region": pa.array([REGIONS[i % 17] for i in range(n_org)]),
                "org_name": ids("Org ", np.arange(n_org)),
                "source_system": pa.array(["reg"] * n_org),
                "source_record_id": ids("O", np.arange(n_org)),
            },
        ),
        1,
    )
    # practitioners: `staff` per polyclinic and per hospital
    prac_org = np.concatenate(
        [np.repeat(np.arange(n_poly), staff), np.repeat(np.arange(n_poly, n_poly + n_hosp), staff)]
    )
    n_prac = len(prac_org)
    died = np.where(rng.random(n_prac) < 0.002, rng.integers(0, DAYS, n_prac), -1)
    lic_to = np.where(rng.random(n_prac) < 0.003, rng.integers(0, DAYS, n_prac), -1)
    write_part(
        root,
        "practitioners",
        conform(
            "practitioners",
            {
                "practitioner_id": ids("D", np.arange(n_prac)),
                "speciality": pa.array(["therapist"] * n_prac),
                "death_date": pc.if_else(
                    pa.array(died >= 0), days(np.maximum(died, 0)), pa.scalar(None, pa.date32())
                ),
                "source_system": pa.array(["reg"] * n_prac),
                "source_record_id": ids("D", np.arange(n_prac)),
            },
        ),
        1,
    )
    write_part(
        root,
        "licences",
        conform(
            "licences",
            {
                "licence_id": ids("L", np.arange(n_prac)),
                "practitioner_id": ids("D", np.arange(n_prac)),
                "valid_from": days(np.full(n_prac, -3650)),
                "valid_to": pc.if_else(
                    pa.array(lic_to >= 0), days(np.maximum(lic_to, 0)), pa.scalar(None, pa.date32())
                ),
                "source_system": pa.array(["reg"] * n_prac),
                "source_record_id": ids("L", np.arange(n_prac)),
            },
        ),
        1,
    )
    write_part(
        root,
        "employments",
        conform(
            "employments",
            {
                "employment_id": ids("E", np.arange(n_prac)),
                "practitioner_id": ids("D", np.arange(n_prac)),
                "org_id": ids("O", prac_org),
                "start_date": days(np.full(n_prac, -3650)),
                "source_system": pa.array(["reg"] * n_prac),
                "source_record_id": ids("E", np.arange(n_prac)),
            },
        ),
        1,
    )
    # tariffs and indications
    tariffs = [{"code": c, "kind": "service", "price": p, "std_minutes": m} for c, p, m in VISITS]
    tariffs += [
        {"code": c, "kind": "service", "price": p, "std_minutes": m, "max_units_per_day": u}
        for c, p, m, u in PROCS
    ]
    tariffs += [{"code": c, "kind": "lab", "price": p, "std_minutes": m} for c, p, m in LABS]
    tariffs += [
        {
            "code": "A02.001",
            "kind": "service",
            "price": 6800,
            "std_minutes": 20,
            "sex": "F",
            "min_age": 30,
            "max_age": 70,
        }
    ]
    tariffs += [
        {"code": a, "kind": "drug", "price": p, "max_daily_dose": dd} for a, p, dd, _ in DRUGS
    ]
    for code, price in CASES:
        tariffs += [
            {
                "code": code,
                "kind": "case_group",
                "price": price,
                "case_family": code,
                "expensive": False,
            },
            {
                "code": code + "X",
                "kind": "case_group",
                "price": price * 2.2,
                "case_family": code,
                "expensive": True,
            },
        ]
    tariffs.append({"code": "CAP01", "kind": "capitation", "price": 1150})
    write_part(root, "tariffs", conform("tariffs", tariffs), 1)
    write_part(
        root,
        "indications",
        conform("indications", [{"atc": a, "icd10_prefix": icd} for a, _, _, icd in DRUGS if icd]),
        1,
    )
    # people, life events, attachments, diagnoses
    pk = np.arange(n_people)
    sex = np.where(rng.random(n_people) < 0.5, "M", "F")
    by = rng.integers(1940, 2024, n_people)
    write_part(
        root,
        "persons",
        conform(
            "persons",
            {
                "person_key": ids("P", pk),
                "sex": pa.array(sex),
                "birth_year": pa.array(by),
                "birth_month": pa.array(rng.integers(1, 13, n_people)),
                "region": pa.array(np.array(REGIONS, dtype=object)[pk % 17]),
                "source_system": pa.array(["mpi"] * n_people),
                "source_record_id": ids("P", pk),
            },
        ),
        1,
    )
    dead = np.flatnonzero(rng.random(n_people) < 0.01)
    emig = np.flatnonzero(rng.random(n_people) < 0.004)
    ev_person = np.concatenate([dead, emig])
    ev_kind = ["death"] * len(dead) + ["emigration"] * len(emig)
    write_part(
        root,
        "life_events",
        conform(
            "life_events",
            {
                "event_id": ids("V", np.arange(len(ev_person))),
                "person_key": ids("P", ev_person),
                "event": pa.array(ev_kind),
                "event_date": days(rng.integers(0, DAYS, len(ev_person))),
                "source_system": pa.array(["death_register"] * len(ev_person)),
                "source_record_id": ids("V", np.arange(len(ev_person))),
            },
        ),
        1,
    )
    write_part(
        root,
        "attachments",
        conform(
            "attachments",
            {
                "attachment_id": ids("A", pk),
                "person_key": ids("P", pk),
                "org_id": ids("O", pk % n_poly),
                "start_date": days(np.full(n_people, -1000)),
                "source_system": pa.array(["attach_reg"] * n_people),
                "source_record_id": ids("A", pk),
            },
        ),
        1,
    )
    # the fund's monthly capitation payments: one per polyclinic and month of the window
    months = [date(START.year + m // 12, m % 12 + 1, 1) for m in range(24)]
    attached = np.bincount(pk % n_poly, minlength=n_poly)
    write_part(
        root,
        "payments",
        conform(
            "payments",
            [{"payment_id": f"CP{o:05d}-{m:%Y%m}", "kind": "capitation",
              "provider_id": f"O{o}", "period_month": m, "paid_date": m,
              "amount": float(attached[o] * 1150), "attached_count": int(attached[o]),
              "rate": 1150.0, "source_system": "fund_capitation",
              "source_record_id": f"CP{o:05d}-{m:%Y%m}"}
             for o in range(n_poly) for m in months],
        ),
        1,
    )
    n_dx = int(n_people * 1.5)
    dx_person = rng.integers(0, n_people, n_dx)
    dx_icd = np.array(ICD, dtype=object)[rng.integers(0, len(ICD), n_dx)]
    # the drug each diagnosis indicates (or the unlisted analgesic)
    drug_for = {icd: i for i, (_, _, _, icd) in enumerate(DRUGS) if icd}
    dx_drug = np.array([drug_for.get(i[:3], len(DRUGS) - 1) for i in dx_icd])
    write_part(
        root,
        "diagnoses",
        conform(
            "diagnoses",
            {
                "diagnosis_id": ids("G", np.arange(n_dx)),
                "person_key": ids("P", dx_person),
                "org_id": ids("O", dx_person % n_poly),
                "diagnosis_date": days(rng.integers(-730, 0, n_dx)),
                "icd10": pa.array(dx_icd),
                "source_system": pa.array(["ehr"] * n_dx),
                "source_record_id": ids("G", np.arange(n_dx)),
            },
        ),
        1,
    )
    # claims, with their stays and dispensations, in chunks of 1M lines
    chunk = 1_000_000
    for ci, start in enumerate(range(0, n_claims, chunk)):
        n = min(chunk, n_claims - start)
        cid = np.arange(start, start + n)
        person = rng.integers(0, n_people, n)
        off = rng.integers(0, DAYS, n)
        r = rng.random(n)
        kind = np.select(
            [r < 0.60, r < 0.68, r < 0.88, r < 0.98], ["visit", "proc", "lab", "drug"], "stay"
        )
        poly = person % n_poly
        provider = np.select(
            [kind == "lab", kind == "drug", kind == "stay"],
            [
                n_poly + n_hosp + n_pharm + rng.integers(0, n_lab, n),
                n_poly + n_hosp + rng.integers(0, n_pharm, n),
                n_poly + rng.integers(0, n_hosp, n),
            ],
            poly,
        )
        prac = np.where(
            np.isin(kind, ["visit", "proc"]), poly * staff + rng.integers(0, staff, n), -1
        )
        code = np.empty(n, dtype=object)
        price = np.zeros(n)
        qty = np.ones(n)
        for k, table in (("visit", VISITS), ("lab", LABS)):
            m = kind == k
            j = rng.integers(0, len(table), m.sum())
            code[m] = np.array([t[0] for t in table], dtype=object)[j]
            price[m] = np.array([t[1] for t in table])[j]
        m = kind == "proc"
        j = rng.integers(0, len(PROCS), m.sum())
        code[m] = np.array([t[0] for t in PROCS], dtype=object)[j]
        price[m] = np.array([t[1] for t in PROCS])[j]
        qty[m] = np.where(rng.random(m.sum()) < 0.01, 6, 1)  # planted excess units
        m = kind == "drug"
        # drugs go to people with the indicating diagnosis (0.5% planted without one)
        g = rng.integers(0, n_dx, m.sum())
        person[m] = dx_person[g]
        j = np.where(rng.random(m.sum()) < 0.005, 0, dx_drug[g])
        code[m] = np.array([t[0] for t in DRUGS], dtype=object)[j]
        price[m] = np.array([t[1] for t in DRUGS])[j]
        qty[m] = (
            30 * np.array([t[2] for t in DRUGS])[j] * np.where(rng.random(m.sum()) < 0.01, 3, 1)
        )
        m = kind == "stay"
        j = rng.integers(0, len(CASES), m.sum())
        hospital = provider[m]
        upcoder = hospital % 7 == 0  # planted: some hospitals code expensive groups a lot
        expensive = rng.random(m.sum()) < np.where(upcoder, 0.55, 0.2)
        code[m] = np.char.add(
            np.array([c for c, _ in CASES])[j], np.where(expensive, "X", "")
        ).astype(object)
        price[m] = np.array([p for _, p in CASES])[j] * np.where(expensive, 2.2, 1.0)
        if ci == 0:
            # planted: 20 impossible days (100 visits each) of one polyclinic's staff, all
            # in June 2025, which also makes that polyclinic's month a volume spike
            blk = np.arange(2000)
            kind[blk] = "visit"
            provider[blk] = 0
            prac[blk] = blk // 100 % staff
            off[blk] = 517 + blk // 100  # 2025-06-01 + i
            code[blk] = VISITS[0][0]
            price[blk] = VISITS[0][1]
            qty[blk] = 1
        claim_ids = ids("C", cid)
        record = pc.if_else(
            pa.array(kind == "stay"),
            ids("S", cid),
            pc.if_else(pa.array(kind == "drug"), ids("X", cid), pa.scalar(None, pa.string())),
        )
        # planted duplicates: 0.2% of lines repeat the previous line's person/date/code
        dup = np.flatnonzero(rng.random(n) < 0.002)
        dup = dup[dup > 0]
        for arr in (person, off, provider, prac, code, price, qty, kind):
            arr[dup] = arr[dup - 1]
        write_part(
            root,
            "claims",
            conform(
                "claims",
                {
                    "claim_id": claim_ids,
                    "person_key": ids("P", person),
                    "provider_id": ids("O", provider),
                    "practitioner_id": pc.if_else(
                        pa.array(prac >= 0),
                        ids("D", np.maximum(prac, 0)),
                        pa.scalar(None, pa.string()),
                    ),
                    "service_date": days(off),
                    "code": pa.array(code),
                    "kind": pa.array(
                        np.select(
                            [kind == "lab", kind == "drug", kind == "stay"],
                            ["lab", "drug", "stay"],
                            "service",
                        )
                    ),
                    "quantity": pa.array(qty),
                    "amount": pa.array(price * qty),
                    "record_type": pc.if_else(
                        pa.array(kind == "stay"),
                        pa.scalar("stay"),
                        pc.if_else(
                            pa.array(kind == "drug"),
                            pa.scalar("dispensation"),
                            pa.scalar("encounter"),
                        ),
                    ),
                    "record_id": record,
                    "billing_system": pick(rng, n, ["his-a", "his-b"]),
                    "source_system": pa.array(["fund"] * n),
                    "source_record_id": claim_ids,
                },
            ),
            1,
            ci,
        )
        s = np.flatnonzero(kind == "stay")
        los = rng.integers(1, 15, len(s))
        write_part(
            root,
            "stays",
            conform(
                "stays",
                {
                    "stay_id": ids("S", cid[s]),
                    "person_key": ids("P", person[s]),
                    "org_id": ids("O", provider[s]),
                    "admit_date": days(off[s]),
                    "discharge_date": days(off[s] + los),
                    "case_group": pa.array(code[s]),
                    "source_system": pa.array(["his"] * len(s)),
                    "source_record_id": ids("S", cid[s]),
                },
            ),
            1,
            ci,
        )
        x = np.flatnonzero(kind == "drug")
        write_part(
            root,
            "dispensations",
            conform(
                "dispensations",
                {
                    "dispensation_id": ids("X", cid[x]),
                    "person_key": ids("P", person[x]),
                    "org_id": ids("O", provider[x]),
                    "dispense_date": days(off[x]),
                    "atc": pa.array(code[x]),
                    "quantity": pa.array(qty[x]),
                    "days_supply": pa.array(np.full(len(x), 30)),
                    "source_system": pa.array(["pharm"] * len(x)),
                    "source_record_id": ids("X", cid[x]),
                },
            ),
            1,
            ci,
        )
    write_manifest(
        root,
        Manifest(
            builder="bench", as_of=AS_OF.isoformat(), rows={"claims": n_claims, "persons": n_people}
        ),
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--claims", type=int, default=10_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/usmis-bench-oversight"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-limit", default="3GB")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="keep an existing extract")
    args = ap.parse_args()
    if args.generate_only:
        generate(args.dir, args.claims)
        return
    print(
        f"machine: {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB RAM; "
        f"DuckDB threads={args.threads}, memory_limit={args.memory_limit}"
    )
    if not (args.reuse and (args.dir / "manifest.json").exists()):
        import shutil

        shutil.rmtree(args.dir, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--generate-only",
                "--claims",
                str(args.claims),
                "--dir",
                str(args.dir),
            ],
            check=True,
        )
        print(
            f"workload: {args.claims:,} claim lines generated directly as Parquet "
            f"in {time.perf_counter() - t0:.1f} s (child process)"
        )
    size = sum(p.stat().st_size for p in args.dir.rglob("*.parquet")) / 2**20
    print(f"extract: {size:.0f} MiB of Parquet in {args.dir}")
    rules = load_catalogue()
    print(f"load average before (the machine is shared): {os.getloadavg()[0]:.1f}")
    print(f"{'rule':<26}{'seconds':>9}{'cpu s':>9}{'findings':>10}{'at risk, KZT':>20}")
    t0, c0 = time.perf_counter(), time.process_time()
    with open_extract(
        args.dir, threads=args.threads, memory_limit=args.memory_limit, temp_dir=args.dir / ".tmp"
    ) as con:
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{'(views, person_facts)':<26}{total:>9.2f}{cpu:>9.2f}")
        for rule in rules:
            c1 = time.process_time()
            run = run_rule(con, rule, AS_OF)
            rule_cpu = time.process_time() - c1
            total += run.seconds
            cpu += rule_cpu
            amount = pc.sum(run.findings.column("amount_at_risk")).as_py() or 0
            print(f"{rule.id:<26}{run.seconds:>9.2f}{rule_cpu:>9.2f}"
                  f"{run.findings.num_rows:>10,}{amount:>20,.0f}")
    print(f"{'whole catalogue':<26}{total:>9.2f}{cpu:>9.2f}   (target <= 300 s wall)")
    print(f"cpu seconds / {args.threads} threads = {cpu / args.threads:.1f} s: the wall time "
          "to expect on an otherwise idle machine")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"peak RSS of the catalogue process: {peak_rss_mb():,.0f} MiB (target <= 4096 MiB)")


if __name__ == "__main__":
    main()
