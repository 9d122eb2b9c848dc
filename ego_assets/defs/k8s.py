"""Kubernetes wiring (docs/architecture.md §6, §7): the executor by runtime, and each asset's pod resources derived
from its configured backend.

- :func:`executor` is dagster-k8s's ``k8s_job_executor`` (one pod per step) when
  ``EGO_ASSETS_RUNTIME=k8s``, with the shared step defaults of :func:`step_k8s_config`; Dagster's
  in-process executor otherwise (a run carries one video: its steps run in the run's process). The
  definitions apply it to every job, so backfills and sensor runs use it too.
- :func:`op_tags` turns a stage's backend ``Resources`` (``ego_assets.lib.backends``) into the
  ``dagster-k8s/config`` op tags of the asset: CPU/memory requests always, and for a GPU backend the
  GPU limit, the GPU node selector, the GPU toleration and (if declared) a GPU-memory node affinity.
  A CPU backend asks for no GPU anywhere.
- :func:`pool` puts the steps of GPU backends in the ``gpu`` concurrency pool, whose size (the
  instance's ``concurrency.pools.default_limit``, or ``dagster instance concurrency set gpu N``) caps
  the GPU steps running at once across all runs.

Everything is computed when the asset modules are imported (when the definitions load), from the
environment of that process: the code server, the run worker and every step pod load the same
definitions with the same environment (the user-code deployment's), so they agree.

GPU scheduling knobs: the ``K8S_*`` settings of :mod:`ego_assets.lib.settings` (their defaults
fit NVIDIA's device plugin + GPU feature discovery).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import dagster as dg

from ego_assets.defs.settings import runtime
from ego_assets.lib import settings
from ego_assets.lib.backends import Resources, backend_class

K8S_CONFIG_TAG = "dagster-k8s/config"  # dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY
STAGE_TAG = "ego_assets/stage"         # which model stage decides the asset's resources ("none": fixed)
BACKEND_TAG = "ego_assets/backend"     # <name>@<version> of the configured backend
RESOURCES_TAG = "ego_assets/resources"  # the Resources the pod was sized from (JSON)
GPU_POOL = "gpu"

# Steps of the per-video stages without a backend (ingest, segments) and of the dataset.
CPU_DEFAULT = Resources(gpu=0, cpu=1.0, memory_gib=2.0)

SCRATCH_DIR = "/scratch"


def gpu_resource_name() -> str:
    return settings.get("K8S_GPU_RESOURCE")


def _pairs(text: str, var: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise ValueError(f"{var}: {item!r} is not key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def gpu_node_selector() -> dict[str, str]:
    return _pairs(settings.get("K8S_GPU_NODE_SELECTOR"), settings.var("K8S_GPU_NODE_SELECTOR"))


def cpu_node_selector() -> dict[str, str]:
    return _pairs(settings.get("K8S_CPU_NODE_SELECTOR"), settings.var("K8S_CPU_NODE_SELECTOR"))


def gpu_tolerations() -> list[dict[str, str]]:
    """``key[=value][:effect]`` items: ``Equal`` with a value, ``Exists`` without."""
    var = settings.var("K8S_GPU_TOLERATIONS")
    out = []
    for item in filter(None, (s.strip() for s in settings.get("K8S_GPU_TOLERATIONS").split(","))):
        kv, _, effect = item.partition(":")
        key, eq, value = kv.partition("=")
        if not key.strip():
            raise ValueError(f"{var}: {item!r} has no key")
        if effect and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ValueError(f"{var}: {item!r}: effect must be NoSchedule, PreferNoSchedule or NoExecute")
        t = {"key": key.strip(), "operator": "Equal" if eq else "Exists"}
        if eq:
            t["value"] = value.strip()
        if effect:
            t["effect"] = effect
        out.append(t)
    return out


def _at_least(name: str, minimum: float) -> float:
    """Setting ``name`` (a number), refused below ``minimum`` with the variable named."""
    v = settings.get(name)
    if not v >= minimum:
        raise ValueError(f"{settings.var(name)} must be >= {minimum}, got {v}")
    return v


def cpu_quantity(cpu: float) -> str:
    """Kubernetes CPU quantity: whole cores as ``"2"``, else millicores (``"500m"``)."""
    if cpu <= 0:
        raise ValueError(f"cpu must be > 0, got {cpu}")
    return str(int(cpu)) if float(cpu).is_integer() else f"{math.ceil(cpu * 1000)}m"


def memory_quantity(gib: float) -> str:
    if gib <= 0:
        raise ValueError(f"memory_gib must be > 0, got {gib}")
    return f"{math.ceil(gib * 1024)}Mi"


def resources_for(stage: str | None, default: Resources = CPU_DEFAULT) -> Resources:
    """The declared needs of ``stage``'s configured backend (``default`` for no stage)."""
    return default if stage is None else backend_class(stage).resources


def k8s_config(res: Resources, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``dagster-k8s/config`` of a step that needs ``res`` (container/pod/job configs, as the
    Kubernetes Python client's snake_case, which is what dagster-k8s expects)."""
    factor = _at_least("K8S_MEMORY_LIMIT_FACTOR", 1.0)
    requests = {"cpu": cpu_quantity(res.cpu), "memory": memory_quantity(res.memory_gib)}
    limits = {"memory": memory_quantity(res.memory_gib * factor)}  # no CPU limit: no throttling
    pod_spec: dict[str, Any] = {}
    if res.gpu > 0:
        gpu = gpu_resource_name()
        limits[gpu] = str(int(res.gpu))  # extended resources: the request defaults to the limit
        requests[gpu] = str(int(res.gpu))
        if gpu_node_selector():
            pod_spec["node_selector"] = gpu_node_selector()
        if gpu_tolerations():
            pod_spec["tolerations"] = gpu_tolerations()
        label = settings.get("K8S_GPU_MEMORY_LABEL").strip()
        if label and res.gpu_memory_gib > 0:
            # GPU feature discovery labels nodes with the GPU memory in MiB; Gt is strict
            need_mib = math.ceil(res.gpu_memory_gib * 1024)
            pod_spec["affinity"] = {"node_affinity": {
                "required_during_scheduling_ignored_during_execution": {"node_selector_terms": [
                    {"match_expressions": [{"key": label, "operator": "Gt", "values": [str(need_mib - 1)]}]}
                ]}}}
        # CUDA / PyTorch data loaders need more shared memory than the container default (64 MiB)
        pod_spec["volumes"] = [{"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": "8Gi"}}]
    elif cpu_node_selector():
        pod_spec["node_selector"] = cpu_node_selector()
    container: dict[str, Any] = {"resources": {"requests": requests, "limits": limits}}
    if res.gpu > 0:
        container["volume_mounts"] = [{"name": "dshm", "mount_path": "/dev/shm"}]
    cfg: dict[str, Any] = {"container_config": container}
    if pod_spec:
        cfg["pod_spec_config"] = pod_spec
    if labels:
        cfg["pod_template_spec_metadata"] = {"labels": labels}
    return cfg


def _label(value: str) -> str:
    """A valid Kubernetes label value: [A-Za-z0-9_.-], at most 63, alphanumeric at both ends."""
    v = "".join(c if c.isalnum() or c in "_.-" else "_" for c in value)[:63]
    return v.strip("_.-") or "none"


def op_tags(stage: str | None, default: Resources = CPU_DEFAULT) -> dict[str, Any]:
    """The op tags of an asset whose resources come from ``stage``'s configured backend (``None``:
    a stage without backends, which needs ``default``). Put ``op_tags=op_tags("hands")`` on the
    asset decorator (a stage-less asset that needs more than ``CPU_DEFAULT``:
    ``op_tags(None, Resources(cpu=2, memory_gib=8))``). Tags ``ego_assets/stage``, ``/backend`` and
    ``/resources`` say where they came from."""
    if stage is None:
        res, backend = default, "none"
    else:
        cls = backend_class(stage)
        res, backend = cls.resources, cls.code_version()
    labels = {"ego-assets/stage": _label(stage or "none"), "ego-assets/backend": _label(backend),
              "ego-assets/accelerator": "gpu" if res.gpu > 0 else "cpu"}
    return {K8S_CONFIG_TAG: k8s_config(res, labels), STAGE_TAG: stage or "none", BACKEND_TAG: backend,
            RESOURCES_TAG: json.dumps(dataclasses.asdict(res), sort_keys=True)}


def pool(stage: str | None) -> str | None:
    """``"gpu"`` when ``stage``'s configured backend needs a GPU (the asset's ``pool=``), else None."""
    return GPU_POOL if stage is not None and backend_class(stage).resources.gpu > 0 else None


def step_k8s_config() -> dict[str, Any]:
    """Defaults for every step pod, merged under each asset's own op tags: a scratch volume for
    staging and media caches (TMPDIR), no retries of failed pods by Kubernetes (Dagster decides),
    finished Jobs cleaned up after a day."""
    scratch = _at_least("K8S_SCRATCH_GIB", 1)
    return {
        "container_config": {
            "env": [{"name": "TMPDIR", "value": SCRATCH_DIR}],
            "volume_mounts": [{"name": "scratch", "mount_path": SCRATCH_DIR}],
        },
        "pod_spec_config": {
            "volumes": [{"name": "scratch", "empty_dir": {"size_limit": f"{math.ceil(scratch)}Gi"}}],
        },
        "job_spec_config": {"backoff_limit": 0, "ttl_seconds_after_finished": 86400},
    }


def executor() -> dg.ExecutorDefinition:
    """``k8s_job_executor`` (one pod per step) for ``EGO_ASSETS_RUNTIME=k8s``; else Dagster's in-process
    executor: a run carries one video, so its steps run one after the other in the run's own process
    (one definitions load per video instead of one per step; runs of different videos run side by
    side, up to the instance's ``max_concurrent_runs``)."""
    if runtime() != "k8s":
        return dg.in_process_executor
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured({"step_k8s_config": step_k8s_config()}, name="ego_k8s")

