"""deploy/k8s renders with kustomize, passes schema validation, and its parts agree with each other
and with the code (drain time, probes, the queue gauge's labels). No cluster: all offline."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from dtf_bus import defaults
from dtf_bus.broker import matching
from dtf_bus.monitor import gauges as queue_gauges
from tests.deploy.conftest import KUSTOMIZATIONS, ROOT, by_kind, render

pytestmark = pytest.mark.deploy

SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "keda.sh_v1alpha1_ScaledObject.json"}
# The oldest Kubernetes the manifests claim to work on, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
OVERLAYS = [k for k in KUSTOMIZATIONS if k.startswith("overlays/")]


def validate(obj: dict) -> None:
    """Raise if ``obj`` does not fit its schema: Kubernetes' own (strict: unknown fields refused) or a
    vendored CRD schema. A kind with neither is an error, so a new CRD cannot slip in unchecked."""
    crd = CRD_SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
    if crd is not None:
        schema = json.loads(crd.read_text())
        jsonschema.Draft202012Validator(schema).validate(obj)
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def test_there_are_overlays_and_worker_classes():
    assert {"overlays/dev", "overlays/production"} <= set(OVERLAYS)
    assert {"workers/cpu", "workers/cuda", "workers/browser"} <= set(KUSTOMIZATIONS)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_every_kustomization_renders_and_every_object_is_valid(directory):
    objects = render(directory)
    assert objects, f"{directory} rendered nothing"
    for obj in objects:
        try:
            validate(obj)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{directory}: {obj['kind']}/{obj['metadata']['name']} is invalid: {exc}")


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("Deployment", ("spec", "template", "spec", "terminationGracePeriod"), 30),  # misspelt field
        ("StatefulSet", ("spec", "replicas"), "one"),  # wrong type
        ("ScaledObject", ("spec", "minReplicas"), 1),  # misspelt field
        ("ScaledObject", ("spec", "triggers", 0, "metadata", "threshold"), "four"),  # not a number
    ],
)
def test_the_validation_refuses_a_broken_object(kind, path, value):
    obj = copy.deepcopy(by_kind(render("overlays/production"), kind)[0])
    target = obj
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(obj)


def test_an_unknown_kind_is_not_waved_through():
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "x"}})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_inside_an_overlay_resolve(overlay):
    objects = render(overlay)
    workloads = by_kind(objects, "Deployment") + by_kind(objects, "StatefulSet")
    pod_labels = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"] for o in workloads}

    def selected(selector: dict) -> list[str]:
        return [name for name, labels in pod_labels.items() if selector.items() <= labels.items()]

    for scaled in by_kind(objects, "ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]["name"]
        assert target in {d["metadata"]["name"] for d in by_kind(objects, "Deployment")}, target
    for pdb in by_kind(objects, "PodDisruptionBudget"):
        assert len(selected(pdb["spec"]["selector"]["matchLabels"])) == 1, pdb["metadata"]["name"]
    for workload in workloads:
        assert workload["spec"]["selector"]["matchLabels"].items() <= pod_labels[workload["metadata"]["name"]].items()
    [broker] = by_kind(objects, "StatefulSet")
    ports = {p["name"] for c in broker["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert ports == {"router", "pub", "http"}
    for service in by_kind(objects, "Service"):
        assert selected(service["spec"]["selector"]) == [broker["metadata"]["name"]]
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_grace_period_covers_the_drain_that_sigterm_starts(overlay):
    """SIGTERM drains: running tasks finish, results wait up to interval x liveness for their
    acknowledgement, leftover process groups get KILL_GRACE. The grace period must cover that."""
    drain_overhead = defaults.HEARTBEAT_INTERVAL * defaults.HEARTBEAT_LIVENESS + defaults.KILL_GRACE
    deployments = by_kind(render(overlay), "Deployment")
    assert deployments
    for deployment in deployments:
        longest_task = float(deployment["metadata"]["annotations"]["dtf.io/max-task-seconds"])
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert longest_task + drain_overhead <= grace <= longest_task + drain_overhead + 60, deployment["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_keys_and_secrets_are_wired(overlay):
    objects = render(overlay)
    documented = (ROOT / "docs" / "deploy.md").read_text()
    for workload in by_kind(objects, "Deployment") + by_kind(objects, "StatefulSet"):
        pod = workload["spec"]["template"]["spec"]
        for secret in [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]:
            assert f"kubectl -n $NS create secret generic {secret}" in documented, f"docs/deploy.md: make {secret}"
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert container["readinessProbe"]["exec"]["command"][:2] == ["dtf", "ping"]
            assert container["livenessProbe"]["exec"]["command"][:2] == ["dtf", "ping"]
            # Probes reach the broker with the pod's own keys: both files, mounted.
            mounts = [m["mountPath"] for m in container["volumeMounts"]]
            for key in ("DTF_CURVE_SECRET", "DTF_BROKER_KEY"):
                assert any(env[key].startswith(m + "/") for m in mounts), (workload["metadata"]["name"], key)
            if workload["kind"] == "Deployment":  # a worker's liveness reads its own file, never the broker
                alive = container["livenessProbe"]["exec"]["command"]
                assert alive[2:4] == ["--alive-file", env["DTF_ALIVE_FILE"]]
                assert float(alive[alive.index("--max-age") + 1]) > defaults.ALIVE_FILE_INTERVAL * 3


def test_gpu_workers_ask_for_gpus_and_gpu_nodes():
    [cuda] = [d for d in by_kind(render("overlays/production"), "Deployment") if d["metadata"]["name"].endswith("cuda")]
    pod = cuda["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert "cuda" in pod["containers"][0]["image"]


# ----------------------------------------------------------- the autoscalers' queries

MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def counted_by(query: str, labels: dict[str, str]) -> bool:
    """Whether a series with ``labels`` is in ``sum(dtf_queued_tasks{...})``: PromQL label matchers,
    with regexes anchored at both ends as Prometheus does."""
    selector = re.search(r"dtf_queued_tasks\{([^}]*)\}", query)
    assert selector, query
    for name, op, value in MATCHER.findall(selector.group(1)):
        have = labels.get(name, "")
        ok = {
            "=": lambda v=value, h=have: h == v,
            "!=": lambda v=value, h=have: h != v,
            "=~": lambda v=value, h=have: re.fullmatch(v, h) is not None,
            "!~": lambda v=value, h=have: re.fullmatch(v, h) is None,
        }[op]()
        if not ok:
            return False
    return True


def example_requirements() -> list[dict]:
    suite = tomllib.loads((ROOT / "configs" / "suites" / "example.toml").read_text())
    found = [t.get("requires", {}) for t in suite["tasks"]]
    return [
        *found,
        {"hardware": "cpu"},
        {"pool": "ci"},
        {"hardware": "cuda", "gpu_model": "A100"},
        {"browser": "firefox"},
    ]


def expected_class(requires: dict) -> str:
    hardware = requires.get("hardware")
    wanted = set(hardware if isinstance(hardware, list) else [hardware] if hardware else [])
    if "browser" in requires or "webgpu" in wanted:
        return "browser"
    return "cuda" if "cuda" in wanted else "cpu"


def test_each_queued_task_scales_exactly_the_worker_class_that_can_run_it():
    scaled = {
        s["metadata"]["name"].rsplit("-", 1)[1]: s for s in by_kind(render("overlays/production"), "ScaledObject")
    }
    assert set(scaled) == {"cpu", "cuda", "browser"}
    queries = {cls: s["spec"]["triggers"][0]["metadata"]["query"] for cls, s in scaled.items()}
    for requires in example_requirements():
        requirement, hardware = queue_gauges.labels(matching.requirement_key("sim", requires))
        labels = {"__name__": "dtf_queued_tasks", "requirement": requirement, "hardware": hardware}
        counting = {cls for cls, query in queries.items() if counted_by(query, labels)}
        assert counting == {expected_class(requires)}, (requires, labels, counting)
    # Any-of hardware: every class that could take it scales for it.
    labels = dict(
        zip(
            ("requirement", "hardware"),
            queue_gauges.labels(matching.requirement_key("sim", {"hardware": ["cpu", "cuda"]})),
            strict=True,
        )
    )
    assert {cls for cls, query in queries.items() if counted_by(query, labels)} == {"cpu", "cuda"}
