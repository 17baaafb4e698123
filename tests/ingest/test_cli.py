"""The `usmis` commands of the ingest domain (Typer's CliRunner, real database)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from usmis.cli import app
from usmis.config import Settings

from .test_file_mapping import _file, euro_row

runner = CliRunner()


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("USMIS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("USMIS_DATABASE_URL", settings.resolved_database_url)
    return settings


def _run(*args: str) -> str:
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r.output


def test_sources_ingest_report_and_deadletters(env: Settings, tmp_path: Path) -> None:
    out = json.loads(_run("sources", "add", "pharm_europharma", "--name", "Europharma",
                          "--kind", "pharmacy", "--channel", "file", "--format", "csv"))
    assert out["id"] == "pharm_europharma"
    assert "pharm_europharma" in _run("sources", "list")
    path = tmp_path / "extract.csv"
    path.write_bytes(_file(euro_row(), euro_row(ID_ОТПУСКА="D2", ИИН=""),
                           euro_row(ID_ОТПУСКА="D3", ДАТА_ОТПУСКА="31.02.20X4")))
    result = _last_json(_run("ingest", str(path), "--source", "pharm_europharma"))
    assert result["records"] == 3
    report = json.loads(_run("sources", "report", "--format", "json"))
    q = report["pharm_europharma"]
    assert q["by_status"] == {"done": 2, "dead": 1}
    assert q["iin"]["missing"] == 1
    assert q["rejects"] == [{"rule": "date-format", "field": "ДАТА_ОТПУСКА", "count": 1}]
    table = _run("sources", "report")
    assert "reject date-format at ДАТА_ОТПУСКА: 1" in table
    dls = json.loads(_run("deadletters", "list", "--format", "json"))
    assert [d["rule"] for d in dls] == ["date-format"]
    shown = _run("deadletters", "show", str(dls[0]["id"]))
    assert "31.02.20X4" in shown
    fixed = tmp_path / "fixed.csv"
    fixed.write_bytes(euro_row(ID_ОТПУСКА="D3").encode("cp1251"))
    assert "stored 1" in _run("deadletters", "replay", str(dls[0]["id"]), "--content",
                              str(fixed))
    assert json.loads(_run("deadletters", "list", "--format", "json")) == []
    _run("sources", "disable", "pharm_europharma")
    r = runner.invoke(app, ["ingest", str(path), "--source", "pharm_europharma"])
    assert r.exit_code != 0  # a disabled source is refused


def _last_json(output: str) -> dict[str, object]:
    start = output.index("{")
    return json.loads(output[start:])  # type: ignore[no-any-return]


def test_a_new_source_is_one_mapping_file_and_a_folder_loads(env: Settings, tmp_path: Path
                                                             ) -> None:
    """The 31st source: a mapping file of its own (JSON extracts here, an array and JSON
    lines), registered with ``sources add --mapping``, a folder ingested in one command."""
    mapping = tmp_path / "clinic_new.toml"
    mapping.write_text("""
[read]
format = "json"
date_formats = ["%d/%m/%Y"]

[row]
id = "$code"
event_time = "$opened|date"

[[resource]]
type = "Organization"
key = "$code"
required = true
[resource.body]
name = "$title|required"
""", encoding="utf-8")
    out = json.loads(_run("sources", "add", "clinic_new", "--name", "New clinic", "--kind",
                          "clinic", "--channel", "file", "--format", "json", "--mapping",
                          str(mapping)))
    assert out["id"] == "clinic_new"
    listed = json.loads(_run("sources", "list", "--format", "json"))
    assert [s["mapping"] for s in listed if s["id"] == "clinic_new"] == [str(mapping)]
    assert "New clinic" in _run("sources", "show", "clinic_new")
    folder = tmp_path / "extracts"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps([
        {"code": "C1", "title": "Clinic one", "opened": "01/02/2024"},
        {"code": "C2", "title": "Clinic two", "opened": "03/02/2024"}]), encoding="utf-8")
    (folder / "b.json").write_text(
        json.dumps({"code": "C3", "title": "Clinic three", "opened": "05/02/2024"}) + "\n"
        + '{"code": "C4", "title": \n', encoding="utf-8")
    _run("ingest", str(folder), "--source", "clinic_new")
    q = json.loads(_run("sources", "report", "--format", "json"))["clinic_new"]
    assert q["by_status"] == {"done": 3, "dead": 1}
    assert q["resources"] >= 3
    assert [r["rule"] for r in q["rejects"]] == ["json"]
