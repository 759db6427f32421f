"""Postmortem against an expert's verdicts: the public corpus and the lab incident sets (issue 17).

The manifests (tests/fixtures/postmortem-real/expected.toml, postmortem-incidents/expected.toml)
say what each input is and what a person reads from each bundle; `evaluate.py` runs
`vfiowatch postmortem` the way a user does (its CLI, in the bundle's folder). Whole reports of
the incident sets are pinned as golden files (tests/golden/postmortem/incident-*.json);
regenerate with `UPDATE_GOLDEN=1` and review the diff.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import FIXTURES

REAL = FIXTURES / "postmortem-real"
INCIDENTS = FIXTURES / "postmortem-incidents"
GOLDEN = Path(__file__).resolve().parent / "postmortem"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

# The measurement script, used as a library (it lives beside the corpus it measures, in a folder
# that is not a package).
_SPEC = importlib.util.spec_from_file_location("evaluate", REAL / "evaluate.py")
assert _SPEC is not None and _SPEC.loader is not None
evaluate = sys.modules["evaluate"] = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(evaluate)


@pytest.mark.parametrize("manifest", [REAL / "expected.toml", INCIDENTS / "expected.toml"],
                         ids=["public-corpus", "lab-incidents"])
def test_every_input_recognised_every_verdict_found_no_false_critical(manifest: Path) -> None:
    """Each input is read as the artifact it is, each expected finding (rule, severity,
    signature, device, sandbox) is reached, and no critical finding is one an expert would not
    give."""
    t = evaluate.evaluate(manifest, verbose=True)
    assert t.misses == [], "\n".join(t.misses)
    assert (t.recognised, t.found, t.false_critical) == (t.inputs, t.expected, 0), t.line()


def _digest(doc: dict[str, object]) -> dict[str, object]:
    return {
        "exit_status": doc["exit_status"],
        "not_read_whole": doc["not_read_whole"],
        "inputs": [{"path": i["path"], "format": i["format"], "clock": i["clock"],
                    "events": i["events"], "notes": i["notes"]}
                   for i in doc["inputs"]],  # type: ignore[union-attr]
        "clock_notes": doc["clock_notes"],
        "findings": [{k: f.get(k) for k in ("rule", "severity", "status", "bdf", "sandbox_id",
                                             "summary", "inputs", "resolved_reason")}
                     | {"actor_pid": (f.get("actor") or {}).get("pid"),
                        "inferred": dict(f.get("labels") or {}).get("inferred")}
                     for f in doc["findings"]],  # type: ignore[union-attr]
    }


SETS = [b for b in tomllib.loads((INCIDENTS / "expected.toml").read_text())["bundle"]]


@pytest.mark.parametrize("bundle", SETS, ids=[b["name"] for b in SETS])
def test_incident_set_report_matches_golden(bundle: dict[str, object]) -> None:
    """The whole report of each lab incident set (inputs, clocks, findings with the inputs they
    rest on and what was inferred) equals its golden file."""
    folder = INCIDENTS / str(bundle["name"])
    at: dict[str, str] = bundle.get("at", {})  # type: ignore[assignment]
    files = [f"{n}@{at[n]}" if n in at else n for n in bundle["inputs"]]  # type: ignore[union-attr]
    doc = evaluate.run_bundle(folder, files, list(bundle.get("args", [])))  # type: ignore[arg-type]
    assert "error" not in doc, doc
    actual = json.dumps(_digest(doc), indent=1, ensure_ascii=False) + "\n"
    path = GOLDEN / f"incident-{bundle['name']}.json"
    if UPDATE or not path.exists():
        path.write_text(actual)
        if not UPDATE:
            pytest.fail(f"{path} did not exist; written, review and commit it")
        return
    assert actual == path.read_text(), f"{path.name} differs; regenerate with UPDATE_GOLDEN=1"
