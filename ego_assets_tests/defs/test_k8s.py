"""Kubernetes, offline (issue 7): for every asset of the definitions and for a CPU and a GPU backend
configuration, the step Job dagster-k8s would submit, built by dagster-k8s's own step handler
(K8sStepHandler.launch_step -> construct_dagster_k8s_job) under the run launcher and the code-server
container context that k8s/values.yaml gives the official chart; its resources, node selector and
tolerations; every Job and every manifest under k8s/ validated with kubernetes-validate for a pinned
Kubernetes version; `dagster definitions validate` with EGO_ASSETS_RUNTIME=k8s.

Nothing lists the assets: the tests iterate over whatever ``ego_assets.definitions.defs`` holds when
they run, plus one probe asset per model stage (so the GPU path is exercised before every stage has
its asset)."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
import yaml

from ego_assets.defs import k8s
from ego_assets.defs.partitions import backfill_policy, videos
from ego_assets.lib import backends

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "k8s"
K8S_VERSION = "1.31.0"  # the Kubernetes version manifests and Jobs are validated against
IMAGE = "registry.example.com/ego-assets:test"
RELEASE, NAMESPACE = "dagster", "ego"

FAKE_GPU = backends.Resources(gpu=1, cpu=4.0, memory_gib=16.0, gpu_memory_gib=20.0)
FAKE_CPU_HEAVY = backends.Resources(gpu=0, cpu=2.5, memory_gib=6.0)


def _register_fakes() -> None:
    """A GPU and a heavy-CPU backend for every stage, as a plugin would register them."""
    for stage in backends.STAGES:
        for name, res in (("fake_gpu", FAKE_GPU), ("fake_cpu_heavy", FAKE_CPU_HEAVY)):
            cls = type(f"{name}_{stage}", (backends.Backend,),
                       {"name": name, "version": "0", "resources": res})
            backends.register(stage, name)(cls)


_register_fakes()


# -- the definitions under a given environment ----------------------------------------------------

def _reload_definitions():
    """Re-import the asset modules and the definitions, as a fresh code server / step process does, so
    that op tags and pools are derived from the current environment."""
    import ego_assets.definitions as d

    modules = getattr(d, "ASSET_MODULES", None) or [  # else every wiring module, in import order
        m for name, m in list(sys.modules.items())
        if name.startswith("ego_assets.defs.") and name not in ("ego_assets.defs.k8s",
                                                                 "ego_assets.defs.settings")]
    for m in list(modules):
        importlib.reload(m)
    return importlib.reload(d)


@contextlib.contextmanager
def _definitions_with(env: dict[str, str]):
    keys = {backends.env_var(s) for s in backends.STAGES} | {"EGO_ASSETS_RUNTIME"} | set(env)
    saved = {k: os.environ.get(k) for k in keys}
    try:
        for k in keys:
            os.environ.pop(k, None)
        os.environ.update(env)
        yield _reload_definitions().defs
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _reload_definitions()


def _resolvable_stages() -> list[str]:
    """Stages whose configured backend exists (a stage whose built-in backends are not written yet
    has none under the default configuration)."""
    out = []
    for stage in backends.STAGES:
        try:
            backends.backend_class(stage)
        except LookupError:
            continue
        out.append(stage)
    return out


def _probe_assets() -> list[dg.AssetsDefinition]:
    """One asset per model stage, decorated the way the project's assets are."""
    out = []
    for stage in _resolvable_stages():
        @dg.asset(name=f"k8s_probe_{stage}", partitions_def=videos, backfill_policy=backfill_policy,
                  op_tags=k8s.op_tags(stage), pool=k8s.pool(stage))
        def _probe() -> None:
            return None

        out.append(_probe)

    @dg.asset(name="k8s_probe_stageless_big", partitions_def=videos, backfill_policy=backfill_policy,
              op_tags=k8s.op_tags(None, backends.Resources(cpu=2, memory_gib=8)), pool=k8s.pool(None))
    def _big() -> None:
        return None

    out.append(_big)
    return out


def _ops(defs: dg.Definitions) -> dict[str, tuple[dict, str | None]]:
    """op name -> (op tags, pool) for every executable asset op of the definitions."""
    out = {}
    for ad in defs.resolve_asset_graph().assets_defs:
        if ad.is_executable and ad.node_def is not None:
            out[ad.node_def.name] = (dict(ad.node_def.tags), ad.node_def.pool)
    return out


def _expected(stage: str | None, tags: dict) -> backends.Resources:
    """A staged asset: what its configured backend declares (looked up here, independently of the
    tags). A stage-less asset: the fixed needs it declared (CPU_DEFAULT unless it asked for more)."""
    declared = backends.Resources(**json.loads(tags[k8s.RESOURCES_TAG]))
    if stage is None:
        assert declared.gpu == 0, "a stage-less asset asks for a GPU"
        return declared
    res = backends.backend_class(stage).resources
    assert declared == res
    return res


# -- what the official chart builds from k8s/values.yaml --------------------------------------------

def _values() -> dict:
    return yaml.safe_load((K8S_DIR / "values.yaml").read_text())


def _chart_run_launcher(values: dict, kubeconfig: str) -> dict:
    """The `run_launcher` of the instance's dagster.yaml, as the chart's template renders it
    (helm/dagster/templates/helpers/instance/_run-launcher.tpl), loaded from a kubeconfig instead of
    in-cluster."""
    rl = values["runLauncher"]["config"]["k8sRunLauncher"]
    cfg = {
        "load_incluster_config": False, "kubeconfig_file": kubeconfig,
        "job_namespace": rl.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": rl["imagePullPolicy"],
        "service_account_name": f"{RELEASE}",
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if rl.get("envConfigMaps"):
        cfg["env_config_maps"] = [e["name"] for e in rl["envConfigMaps"]]
    if rl.get("envSecrets"):
        cfg["env_secrets"] = [e["name"] for e in rl["envSecrets"]]
    for key, name in (("envVars", "env_vars"), ("volumes", "volumes"), ("volumeMounts", "volume_mounts"),
                      ("labels", "labels"), ("resources", "resources")):
        if rl.get(key):
            cfg[name] = rl[key]
    if rl.get("failPodOnRunFailure"):
        cfg["fail_pod_on_run_failure"] = True
    if rl.get("runK8sConfig"):
        names = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
                 "podTemplateSpecMetadata": "pod_template_spec_metadata",
                 "jobSpecConfig": "job_spec_config", "jobMetadata": "job_metadata"}
        cfg["run_k8s_config"] = {names[k]: v for k, v in rl["runK8sConfig"].items()}
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": cfg}


def _chart_container_context(values: dict) -> dict:
    """DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT of the user-code deployment (includeConfigInLaunchedRuns;
    charts/dagster-user-deployments/templates/helpers/_helpers.tpl): it reaches run and step pods."""
    dep = values["dagster-user-deployments"]["deployments"][0]
    ctx = {"image_pull_policy": dep["image"]["pullPolicy"],
           "env_config_maps": [f"{RELEASE}-dagster-user-deployments-{dep['name']}-user-env"]
           + [e["name"] for e in dep.get("envConfigMaps") or []],
           "namespace": NAMESPACE,
           "service_account_name": f"{RELEASE}-dagster-user-deployments-user-deployments"}
    for key, name in (("envSecrets", "env_secrets"),):
        if dep.get(key):
            ctx[name] = [e["name"] for e in dep[key]]
    for key, name in (("volumeMounts", "volume_mounts"), ("volumes", "volumes"), ("labels", "labels"),
                      ("resources", "resources")):
        if dep.get(key):
            ctx[name] = dep[key]
    if isinstance(dep.get("env"), list) and dep["env"]:
        ctx["env"] = dep["env"]
    return {"k8s": ctx}


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: offline, user: {token: offline}}]
contexts: [{name: offline, context: {cluster: offline, user: offline, namespace: ego}}]
current-context: offline
"""


@pytest.fixture(scope="module")
def chart_instance(tmp_path_factory):
    from dagster._core.test_utils import instance_for_test

    d = tmp_path_factory.mktemp("k8s")
    kubeconfig = d / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    values = _values()
    (d / "dagster_home").mkdir()
    with instance_for_test(overrides={"run_launcher": _chart_run_launcher(values, str(kubeconfig))},
                           temp_dir=str(d / "dagster_home")) as instance:
        yield instance, _chart_container_context(values)


# -- dagster-k8s's step handler, submitting to a recorder instead of an API server ----------------

def _step_handler(job_def: dg.JobDefinition, instance):
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.executor.init import InitExecutorContext

    ex_def = job_def.executor_def
    assert ex_def.name == "ego_k8s", f"{job_def.name} does not use the k8s executor: {ex_def.name}"
    resolved = ex_def.config_schema.resolve_config({})
    assert resolved.success, resolved.errors
    executor = ex_def.executor_creation_fn(
        InitExecutorContext(job=InMemoryJob(job_def), executor_def=ex_def,
                            executor_config=resolved.value["config"], instance=instance))
    handler = executor._step_handler  # noqa: SLF001 - the object that builds and submits step Jobs
    submitted = []
    handler._api_client = SimpleNamespace(  # noqa: SLF001
        create_namespaced_job_with_retries=lambda body, namespace: submitted.append((body, namespace)))
    return handler, submitted


def _submitted_step_jobs(defs: dg.Definitions, instance, container_context: dict, monkeypatch):
    """op name -> (V1Job, namespace) for every asset step of every job that carries assets."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._grpc.types import ExecuteStepArgs
    import dagster_k8s.executor as k8s_executor

    monkeypatch.setattr(k8s_executor.DagsterEvent, "step_worker_starting",
                        staticmethod(lambda *a, **k: "step_worker_starting"))
    repo_origin = RepositoryPythonOrigin(
        executable_path="/app/.venv/bin/python",
        code_pointer=ModuleCodePointer("ego_assets.definitions", "defs", working_directory="/app"),
        container_image=IMAGE, container_context=container_context)
    jobs = {}
    job_defs = [defs.resolve_job_def(j.name) for j in defs.jobs or []]
    job_defs.append(defs.resolve_implicit_global_asset_job_def())  # backfills and UI materializations
    for job_def in job_defs:
        handler, submitted = _step_handler(job_def, instance)
        plan = create_execution_plan(job_def)
        origin = JobPythonOrigin(job_def.name, repo_origin)
        run = DagsterRun(job_name=job_def.name, run_id=str(uuid.uuid4()), job_code_origin=origin)
        for step in plan.steps:
            args = ExecuteStepArgs(job_origin=origin, run_id=run.run_id, step_keys_to_execute=[step.key])
            ctx = SimpleNamespace(
                execute_step_args=args, dagster_run=run, instance=instance,
                step_tags={step.key: step.tags},
                get_step_context=lambda key, s=step: SimpleNamespace(step=SimpleNamespace(op_name=s.key)))
            events = list(handler.launch_step(ctx))
            assert events == ["step_worker_starting"]
            jobs[step.key] = submitted.pop()
    return jobs


def _as_manifest(job: kubernetes.client.V1Job) -> dict:
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def _quantity(q: str) -> float:
    from kubernetes.utils import parse_quantity

    return float(parse_quantity(q))


def _check_job(manifest: dict, stage: str | None, res: backends.Resources) -> None:
    """The Job carries the backend's needs exactly, GPU scheduling exactly when it needs a GPU, and
    is valid for the pinned Kubernetes version."""
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    spec = manifest["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    r = container["resources"]
    gpu = k8s.gpu_resource_name()
    want_requests = {"cpu": k8s.cpu_quantity(res.cpu), "memory": k8s.memory_quantity(res.memory_gib)}
    want_limits = {"memory": k8s.memory_quantity(res.memory_gib * 1.5)}
    if res.gpu:
        want_requests[gpu] = want_limits[gpu] = str(res.gpu)
    assert r == {"requests": want_requests, "limits": want_limits}, (stage, r)
    for k, v in r["requests"].items():  # the API server rejects a request above its limit
        assert k not in r["limits"] or _quantity(v) <= _quantity(r["limits"][k]), (stage, k)
    text = json.dumps(manifest)
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert labels["ego-assets/accelerator"] == ("gpu" if res.gpu else "cpu")
    assert labels["ego-assets/stage"] == (stage or "none")
    if res.gpu:
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                        "effect": "NoSchedule"}]
        term = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["nodeSelectorTerms"][0]["matchExpressions"] == [
            {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": [str(int(res.gpu_memory_gib * 1024) - 1)]}]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    else:
        assert "nvidia" not in text and not any("gpu" in k for part in r.values() for k in part)
        assert "tolerations" not in spec and "nodeSelector" not in spec and "affinity" not in spec
    # shared step defaults, the image and the code server's settings reach the step pod
    assert container["image"] == IMAGE
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TMPDIR"] == k8s.SCRATCH_DIR and env["EGO_ASSETS_RUNTIME"] == "k8s"
    assert env["EGO_ASSETS_HOME"].startswith("s3://")
    assert {"secretRef": {"name": "ego-assets-secrets"}} in container["envFrom"]
    assert any(v["name"] == "scratch" and v["emptyDir"]["sizeLimit"] == "50Gi" for v in spec["volumes"])
    assert manifest["spec"]["backoffLimit"] == 0
    assert container["args"] == ["/app/.venv/bin/python", "-m", "dagster", "api", "execute_step"]


# -- tests ------------------------------------------------------------------------------------------

CONFIGS = {
    "cpu": {},
    "gpu": {backends.env_var(s): "fake_gpu" for s in backends.STAGES},
    "cpu_heavy": {backends.env_var(s): "fake_cpu_heavy" for s in backends.STAGES},
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_asset_step_job(config, chart_instance, monkeypatch):
    instance, container_context = chart_instance
    env = {"EGO_ASSETS_RUNTIME": "k8s", **CONFIGS[config]}
    with _definitions_with(env) as defs:
        real = _ops(defs)
        assert real, "the definitions hold no assets"
        with_probes = dg.Definitions.merge(defs, dg.Definitions(assets=_probe_assets()))
        ops = _ops(with_probes)
        jobs = _submitted_step_jobs(with_probes, instance, container_context, monkeypatch)
        assert set(ops) <= set(jobs), f"assets with no step: {set(ops) - set(jobs)}"
        n_gpu = 0
        for op, (tags, op_pool) in ops.items():
            # every asset's resources are derived from a stage (or declared stage-less)
            assert k8s.STAGE_TAG in tags, f"asset op {op} has no op_tags(stage) (ego_assets.defs.k8s)"
            stage = None if tags[k8s.STAGE_TAG] == "none" else tags[k8s.STAGE_TAG]
            res = _expected(stage, tags)
            if stage is not None and config != "cpu":
                assert res == {"gpu": FAKE_GPU, "cpu_heavy": FAKE_CPU_HEAVY}[config]
            assert op_pool == ("gpu" if res.gpu else None), (op, op_pool)
            job, namespace = jobs[op]
            assert namespace == NAMESPACE
            _check_job(_as_manifest(job), stage, res)
            n_gpu += bool(res.gpu)
        big = _as_manifest(jobs["k8s_probe_stageless_big"][0])["spec"]["template"]["spec"]["containers"][0]
        assert big["resources"]["requests"] == {"cpu": "2", "memory": "8192Mi"}
        n_staged = sum(t[k8s.STAGE_TAG] != "none" for t, _ in ops.values())
        assert n_gpu == (n_staged if config == "gpu" else 0)
        assert n_staged >= len(_resolvable_stages())
        if config != "cpu":
            assert n_gpu == 0 or config == "gpu"
            assert len(_resolvable_stages()) == len(backends.STAGES)


def test_executor_by_runtime():
    with _definitions_with({"EGO_ASSETS_RUNTIME": "local"}) as defs:
        assert k8s.executor() is dg.in_process_executor
        for job in [defs.resolve_implicit_global_asset_job_def()] + [
                defs.resolve_job_def(j.name) for j in defs.jobs or []]:
            assert job.executor_def.name == "in_process"  # one video per run: one process per run
    with _definitions_with({"EGO_ASSETS_RUNTIME": "k8s"}) as defs:
        jobs = [defs.resolve_implicit_global_asset_job_def()] + [
            defs.resolve_job_def(j.name) for j in defs.jobs or []]
        for job in jobs:  # sensor runs (per_video_job) and backfills (the asset job) alike
            assert job.executor_def.name == "ego_k8s", job.name
            cfg = job.executor_def.config_schema.resolve_config({}).value["config"]
            assert {k: cfg["step_k8s_config"][k] for k in k8s.step_k8s_config()} == k8s.step_k8s_config()


def test_op_tags_settings_and_errors(monkeypatch):
    monkeypatch.setenv(backends.env_var("hands"), "fake_gpu")
    monkeypatch.setenv("EGO_ASSETS_K8S_GPU_RESOURCE", "amd.com/gpu")
    monkeypatch.setenv("EGO_ASSETS_K8S_GPU_NODE_SELECTOR", "pool=a100, zone = b")
    monkeypatch.setenv("EGO_ASSETS_K8S_GPU_TOLERATIONS", "gpu=yes:NoExecute,dedicated")
    monkeypatch.setenv("EGO_ASSETS_K8S_GPU_MEMORY_LABEL", "")
    cfg = k8s.op_tags("hands")[k8s.K8S_CONFIG_TAG]
    assert cfg["container_config"]["resources"]["limits"]["amd.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in json.dumps(cfg)
    assert cfg["pod_spec_config"]["node_selector"] == {"pool": "a100", "zone": "b"}
    assert cfg["pod_spec_config"]["tolerations"] == [
        {"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoExecute"},
        {"key": "dedicated", "operator": "Exists"}]
    assert "affinity" not in cfg["pod_spec_config"]
    assert k8s.pool("hands") == "gpu" and k8s.pool("captions") is None and k8s.pool(None) is None
    assert k8s.cpu_quantity(0.25) == "250m" and k8s.cpu_quantity(3) == "3"
    assert k8s.memory_quantity(1.5) == "1536Mi"
    monkeypatch.setenv("EGO_ASSETS_K8S_GPU_NODE_SELECTOR", "novalue")
    with pytest.raises(ValueError, match="EGO_ASSETS_K8S_GPU_NODE_SELECTOR"):
        k8s.op_tags("hands")
    monkeypatch.setenv("EGO_ASSETS_K8S_GPU_NODE_SELECTOR", "")
    monkeypatch.setenv("EGO_ASSETS_K8S_GPU_TOLERATIONS", "k:Sometimes")
    with pytest.raises(ValueError, match="EGO_ASSETS_K8S_GPU_TOLERATIONS"):
        k8s.op_tags("hands")
    monkeypatch.setenv("EGO_ASSETS_K8S_MEMORY_LIMIT_FACTOR", "0.5")
    with pytest.raises(ValueError, match="EGO_ASSETS_K8S_MEMORY_LIMIT_FACTOR"):
        k8s.k8s_config(backends.Resources())
    monkeypatch.setenv(backends.env_var("hands"), "no_such_backend")
    with pytest.raises(LookupError, match="EGO_ASSETS_HANDS_BACKEND"):
        k8s.op_tags("hands")


def _manifests() -> list[tuple[str, dict]]:
    out = []
    for p in sorted(K8S_DIR.glob("*.yaml")):
        if p.name == "values.yaml":
            continue
        out += [(p.name, d) for d in yaml.safe_load_all(p.read_text()) if d]
    return out


def test_manifests_are_valid_kubernetes():
    docs = _manifests()
    kinds = {(name, d["kind"], d["metadata"]["name"]) for name, d in docs}
    assert {("vllm.yaml", "Deployment", "vllm"), ("vllm.yaml", "Service", "vllm"),
            ("secret.example.yaml", "Secret", "ego-assets-secrets"),
            ("secret.example.yaml", "Secret", "dagster-postgresql-secret"),
            ("postgres.yaml", "StatefulSet", "ego-postgres"), ("postgres.yaml", "Service", "ego-postgres")
            } <= kinds
    for name, d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    secret = next(d for _, d in docs if d["metadata"]["name"] == "ego-assets-secrets")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "EGO_ASSETS_VLM_API_KEY"} <= set(
        secret["stringData"])
    # the vLLM service is where the `openai` captions backend is pointed (values.yaml comments)
    vllm = next(d for _, d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "vllm")
    c = vllm["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(e["name"] == "VLLM_API_KEY" and e["valueFrom"]["secretKeyRef"]["key"] == "EGO_ASSETS_VLM_API_KEY"
               for e in c["env"])
    assert "http://vllm.ego.svc:8000/v1" in (K8S_DIR / "values.yaml").read_text()
    # a mistake is caught: the validator is not a no-op
    bad = json.loads(json.dumps(vllm))
    bad["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = "lots"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


# Top-level keys of the chart's values (helm/dagster/schema/.../values.py: DagsterHelmValues, plus the
# plain values.yaml keys); a misspelt section would be silently ignored by Helm.
CHART_KEYS = {"global", "nameOverride", "fullnameOverride", "rbacEnabled", "imagePullSecrets",
              "dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
              "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "computeLogManager",
              "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry",
              "serviceAccount", "retention", "concurrency", "additionalInstanceConfig", "extraManifests",
              "pipelineRun"}


def test_helm_values_fit_the_chart_and_the_project():
    v = _values()
    assert set(v) <= CHART_KEYS, set(v) - CHART_KEYS
    assert set(v["concurrency"]) <= {"enabled", "pools", "runs"}
    assert set(v["concurrency"]["pools"]) <= {"defaultLimit", "granularity", "opGranularityRunBuffer"}
    assert v["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"  # see test_postgres_instance
    dep = v["dagster-user-deployments"]["deployments"][0]
    env = {e["name"]: e.get("value") for e in dep["env"]}
    assert env["EGO_ASSETS_RUNTIME"] == "k8s" and env["EGO_ASSETS_HOME"].startswith("s3://")
    for s in backends.STAGES:
        assert env[backends.env_var(s)] in backends.available(s) or env[backends.env_var(s)] == backends.DEFAULTS[s]
    assert dep["dagsterApiGrpcArgs"] == ["--module-name", "ego_assets.definitions", "--attribute", "defs"]
    assert dep["includeConfigInLaunchedRuns"]["enabled"] is True
    # the code server's resources are defaults under every step pod: no CPU limit, no GPU
    assert "cpu" not in dep["resources"].get("limits", {})
    assert not any("gpu" in k for part in dep["resources"].values() for k in part)
    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    assert v["postgresql"]["enabled"] is False and v["postgresql"]["postgresqlHost"] == "ego-postgres"
    assert v["generatePostgresqlPasswordSecret"] is False
    mon = v["dagsterDaemon"]["runMonitoring"]
    assert mon["enabled"] and mon["startTimeoutSeconds"] >= 300 and mon["maxResumeRunAttempts"] >= 1
    assert v["concurrency"]["enabled"] and isinstance(v["concurrency"]["pools"]["defaultLimit"], int)
    assert v["concurrency"]["pools"]["granularity"] == "op"
    # the chart refuses maxConcurrentRuns in two places
    assert "maxConcurrentRuns" not in v["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]


def test_dockerfile_installs_from_the_lock_and_provisions_the_model():
    text = (REPO / "Dockerfile").read_text()
    assert "uv sync --frozen --no-dev" in text
    assert "scripts/provision_hand_model.py provision" in text
    assert "--dest /opt/models/hand_landmarker.task" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".ego_assets" in ignored


@pytest.mark.slow
def test_dagster_definitions_validate_on_k8s(tmp_path):
    env = dict(os.environ, EGO_ASSETS_RUNTIME="k8s", EGO_ASSETS_HOME=str(tmp_path / "home"),
               DAGSTER_HOME=str(tmp_path / "dh"), DAGSTER_DISABLE_TELEMETRY="1")
    (tmp_path / "dh").mkdir()
    (tmp_path / "dh" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    r = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate",
                        "-w", "workspace.yaml"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "success" in (r.stdout + r.stderr).lower()
