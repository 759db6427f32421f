"""deploy/daemonset.yaml: valid against the Kubernetes API schemas of every version the README
claims, offline (the `kubernetes-validate` package ships the schemas), and the pod it makes
sees what the code's list (diag.common.needs) says the agent needs: no less, no more."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest

from diag.common import needs
from tests.conftest import REPO
from tests.image.vw_pod import PodView, load_manifest, pod_view


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


# ---- what the pod sees, against what the code says it needs (diag.common.needs) --------------------


def test_the_pod_gets_exactly_the_capabilities_the_code_lists() -> None:
    """Capabilities: ALL dropped, exactly diag.common.needs' list added, nothing privileged."""
    view = pod_view()
    assert view.drop_all and not view.privileged and view.no_new_privs
    assert view.caps == needs.capabilities(), (
        f"missing {sorted(needs.capabilities() - view.caps)}, "
        f"not needed {sorted(view.caps - needs.capabilities())}")


def test_the_pod_shares_the_host_namespaces_the_code_lists() -> None:
    """hostNetwork and hostPID exactly when diag.common.needs names `net` and `pid`."""
    view = pod_view()
    assert needs.namespaces() == {"net", "pid"}
    assert view.host_network and view.host_pid and not view.host_ipc


def _container_path(view: PodView, p: needs.HostPath) -> str:
    root = view.args[view.args.index("--root") + 1]
    return f"{root}{p.path}" if p.under_root else p.path


def test_every_needed_host_path_is_there_as_the_pod_needs_it() -> None:
    """Each path of diag.common.needs resolves, in the pod, to that host path (through /host for
    those read under --root), read-only unless it is to be written; scratch paths are tmpfs."""
    view = pod_view()
    assert view.host_path_of("/host") == "/" and view.mount_for("/host").read_only  # type: ignore[union-attr]
    for p in needs.paths():
        where = _container_path(view, p)
        m = view.mount_for(where)
        assert m is not None, f"{p.path} ({p.why}) is not mounted in the pod"
        if p.host:
            assert view.host_path_of(where) == p.path, (p, m)
        else:  # the pod's own: a memory emptyDir to write, a ConfigMap to read
            assert m.kind == ("emptyDir" if p.writable else "configMap"), (p, m)
            assert m.memory or not p.writable, (p, m)
        assert view.writable(where) == p.writable, (p, m)


def test_every_mount_of_the_pod_is_needed() -> None:
    """No hostPath is mounted that diag.common.needs does not name (the host's / at /host aside,
    which carries every path read under --root)."""
    view = pod_view()
    by_container = {_container_path(view, p): p for p in needs.paths()}
    for m in view.mounts:
        if m.path == "/host":
            continue
        assert m.path in by_container, f"{m.path} ({m.name}) is mounted but nothing needs it"


def test_the_journal_argument_is_on_the_journals_host_path() -> None:
    """--journal points into the writable hostPath diag.common.needs gives the journal."""
    view = pod_view()
    journal = view.args[view.args.index("--journal") + 1]
    (jdir,) = [p for n in needs.NEEDS if n.part == "journal" for p in n.paths]
    assert journal.startswith(jdir.path + "/") and view.writable(journal)
    assert view.host_path_of(journal) == journal


def test_the_config_argument_is_the_configmaps_file() -> None:
    """--config names a key of the ConfigMap mounted there, and that file is a valid
    configuration with Kubernetes Events on."""
    from diag.runtime.settings import parse_text
    from tests.image.vw_pod import config_maps

    view = pod_view()
    cfg = view.args[view.args.index("--config") + 1]
    m = view.mount_for(cfg)
    assert m is not None and m.kind == "configMap" and m.read_only
    text = config_maps()[m.source][cfg.removeprefix(m.path + "/")]
    assert parse_text(text, cfg).k8s["events"] is True


def test_the_rbac_grants_exactly_what_the_events_sink_uses() -> None:
    """The ClusterRole bound to the pod's service account allows what
    diag.sinks.k8s_events.API_PERMISSIONS lists, and nothing else."""
    from diag.sinks.k8s_events import API_PERMISSIONS

    docs = {(d["kind"], d["metadata"]["name"]): d for d in load_manifest()}
    view = pod_view()
    (binding,) = [d for (k, _), d in docs.items() if k == "ClusterRoleBinding"]
    assert {"kind": "ServiceAccount", "name": view.service_account,
            "namespace": "kube-system"} in binding["subjects"]
    role = docs[("ClusterRole", binding["roleRef"]["name"])]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert granted == set(API_PERMISSIONS)
    assert ("ServiceAccount", view.service_account) in docs


def test_the_readmes_podman_run_is_the_daemonsets_pod() -> None:
    """The `podman run` the README documents carries every namespace, capability, security and
    host-mount option the DaemonSet's pod has (rendered by the image tier's podman_argv)."""
    import itertools
    import shlex

    from tests.image.vw_pod import podman_argv

    text = (REPO / "README.md").read_text()
    block = text[text.index("podman run --rm --pid=host"):]
    block = block[:block.index("```")].replace("\\\n", " ")
    readme = set(shlex.split(block.replace("$(hostname)", "NODE")))
    view = pod_view()
    rendered = podman_argv(view, "IMAGE", (), env={}, host_paths={},
                           volume_dirs={m.name: "DIR" for m in view.mounts if m.kind == "configMap"})
    wanted = {a for a in rendered if a.startswith("--") and a not in ("--rm", "--mount")}
    # the host mounts and security options; not the ConfigMap (no cluster) or the tmpfs's size
    wanted |= {v for a, v in itertools.pairwise(rendered)
               if a in ("-v", "--security-opt") and "DIR" not in v}
    missing = sorted(wanted - readme)
    assert not missing, missing
    assert "type=tmpfs,destination=/tmp" in readme
