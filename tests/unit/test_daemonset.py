"""deploy/daemonset.yaml against the Kubernetes API schemas of every version the README claims,
offline (the `kubernetes-validate` package ships the schemas)."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest

from tests.conftest import REPO
from tests.image.vw_pod import load_manifest


def claimed_versions() -> list[str]:
    """Every minor version in the README's claim `Kubernetes 1.A to 1.B`."""
    m = re.search(r"Kubernetes (\d+)\.(\d+) to (\d+)\.(\d+)", (REPO / "README.md").read_text())
    assert m, "README.md must claim the Kubernetes versions it supports: 'Kubernetes 1.A to 1.B'"
    major, lo, major2, hi = (int(x) for x in m.groups())
    assert major == major2 and lo <= hi
    return [f"{major}.{minor}" for minor in range(lo, hi + 1)]


def test_the_claimed_range_is_one_the_schemas_cover() -> None:
    """Both ends of the README's range have schemas (no claim beyond what is checked)."""
    have = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    versions = claimed_versions()
    assert versions[0] in have and versions[-1] in have, (versions, sorted(have))


@pytest.mark.parametrize("version", claimed_versions())
def test_every_object_validates_strictly(version: str) -> None:
    """Each object of the manifest is valid for this version, unknown fields refused."""
    docs = load_manifest()
    assert {d["kind"] for d in docs} >= {"DaemonSet"}
    for d in docs:
        kubernetes_validate.validate(d, version, strict=True)


def test_a_broken_manifest_is_refused() -> None:
    """The validation can fail: a misspelt field and a wrong type are caught."""
    (ds,) = [d for d in load_manifest() if d["kind"] == "DaemonSet"]
    pod: dict[str, Any] = ds["spec"]["template"]["spec"]
    pod["containers"][0]["volumeMounts"][0]["readonly"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readonly"):
        kubernetes_validate.validate(ds, claimed_versions()[0], strict=True)
    del pod["containers"][0]["volumeMounts"][0]["readonly"]
    pod["hostPID"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError, match="boolean"):
        kubernetes_validate.validate(ds, claimed_versions()[-1], strict=True)
