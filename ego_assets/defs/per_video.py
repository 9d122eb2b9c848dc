"""The one way to declare a per-video asset (docs/architecture.md §1, "Adding an asset").

    @per_video_asset(group="ingest", code_version="1", deps=["source_videos"], kinds={"parquet"},
                     checks=MY_CHECKS, config=MyConfig, params=lambda step: {...},
                     description="...")
    def my_asset(step: Step) -> PartitionOutput:
        frames = step.table("frames")
        with step.write() as w:
            w.write_table("my_table", schemas.conform("my_table", cols, step.pk))
        return PartitionOutput(metadata={...})

gives the Dagster asset ``my_asset``: partitioned by video, one run per video (``partitions``), its
Kubernetes tags and pool from its backend stage (``k8s``), its checks as asset checks (ERROR blocks the
video), and the per-video step of :mod:`ego_assets.defs.runner` around the body: skipped when its inputs,
code and parameters are unchanged, a failure recorded as that video's, the tables written through
``step.write()`` hashed as they are written and checked from memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import dagster as dg
import pydantic

from ego_assets.defs.k8s import op_tags, pool
from ego_assets.defs.partitions import backfill_policy, videos
from ego_assets.defs.runner import PartitionOutput, check_specs, progress_logger, run_partitions
from ego_assets.defs.settings import EgoStorage
from ego_assets.lib import parallel
from ego_assets.lib.quality import CheckDef
from ego_assets.lib.storage import PartitionWriter, Store


class PerVideoConfig(dg.Config):
    """Run configuration every per-video asset takes."""

    force: bool = False  # recompute even when inputs, code and parameters are unchanged


def config_from(params_cls: type, fields: Iterable[str] | None = None, name: str | None = None,
                defaults: dict[str, Any] | None = None) -> type[PerVideoConfig]:
    """A run configuration whose fields are ``fields`` of the lib parameters dataclass ``params_cls`` (all
    by default), with its types and defaults: the lib declares a parameter once, the UI's launchpad shows
    it. ``defaults`` replaces some defaults (a value that comes from a setting)."""
    hints = typing.get_type_hints(params_cls)
    by_name = {f.name: f for f in dataclasses.fields(params_cls)}
    chosen = list(fields) if fields is not None else list(by_name)
    spec = {}
    for f in chosen:
        d = by_name[f].default
        if d is dataclasses.MISSING:
            raise TypeError(f"{params_cls.__name__}.{f} has no default: it cannot be a run configuration")
        spec[f] = (hints[f], (defaults or {}).get(f, d))
    return pydantic.create_model(name or params_cls.__name__.replace("Params", "Config"),
                                 __base__=PerVideoConfig, **spec)


def params_of(config: dg.Config, params_cls: type):
    """The lib parameters from a configuration made by :func:`config_from` (its other fields keep the
    lib's defaults)."""
    names = {f.name for f in dataclasses.fields(params_cls)}
    return params_cls(**{k: v for k, v in config.model_dump().items() if k in names})


@dataclass
class Step:
    """One video's step of an asset: what the body reads and writes through."""

    context: dg.AssetExecutionContext
    store: Store
    config: Any
    asset: str
    pk: str
    written: PartitionWriter | None = None

    @property
    def log(self):
        return self.context.log

    def table(self, name: str, columns: list[str] | None = None):
        """An upstream table of this video."""
        return self.store.read_table(name, self.pk, columns)

    def video(self) -> dict:
        """The video's probe row (the ``videos`` table of ``source_videos``)."""
        return self.table("videos").to_pylist()[0]

    def record(self) -> dict:
        """The video's registration (uri, name, source, camera hints)."""
        return self.store.video_record(self.pk)

    def progress(self, unit: str = "frames"):
        """A ``progress(done, total)`` callback for lib functions (Dagster's log and the CLI's bar)."""
        return progress_logger(self.context, self.asset, self.pk, unit)

    @contextlib.contextmanager
    def write(self) -> Iterator[PartitionWriter]:
        """Stage this asset's partition; committed at once when the block ends without an error."""
        with self.store.write_partition(self.asset, self.pk) as w:
            self.written = w
            yield w


def step_cores(context: dg.AssetExecutionContext) -> int:
    """The cores a step's body may use (``lib.parallel``): the machine's, shared by the runs this machine
    is running now (a backfill's two workers get one core each; a video running alone gets them all).
    On Kubernetes a step is a pod of its own: its CPU limit."""
    from ego_assets.defs.monitoring import running_here
    from ego_assets.lib import settings

    if settings.get("RUNTIME") == "k8s":
        return parallel.machine_cores()
    try:
        running = running_here(context.instance)
    except Exception:  # noqa: BLE001 - an instance that cannot list its runs: one core, as before
        return 1
    return max(1, parallel.machine_cores() // max(1, running))


def per_video_asset(*, group: str, code_version: str, description: str, kinds: set[str],
                    deps: Iterable = (), checks: list[CheckDef] = (), config: type[PerVideoConfig] = PerVideoConfig,
                    params: Callable[[Step], dict] | None = None, stage: str | None = None,
                    name: str | None = None):
    """Declare a per-video asset whose body is ``body(step) -> PartitionOutput``.

    ``params(step)``: the parameters of this video's computation (recorded in the lineage; a change
    recomputes the video), default none. ``stage``: the backend stage whose resources (GPU, memory) the
    step needs on Kubernetes. ``checks``: the asset's checks (each names this asset)."""
    checks = list(checks)

    def decorate(body: Callable[[Step], PartitionOutput]) -> dg.AssetsDefinition:
        asset = name or body.__name__
        wrong = [c.name for c in checks if c.asset != asset]
        if wrong:
            raise ValueError(f"checks {wrong} of asset {asset} name another asset")

        def compute(context: dg.AssetExecutionContext, config, ego: EgoStorage):
            store = ego.store()

            def step(pk: str) -> Step:
                return Step(context, store, config, asset, pk)

            def run(pk: str) -> PartitionOutput:  # only when the body runs (not for a skipped step)
                s = step(pk)
                with parallel.using(step_cores(context)):
                    out = body(s)
                out.written = s.written
                return out

            return run_partitions(context, store, run,
                                  params=(lambda pk: params(step(pk))) if params else {},
                                  checks=checks, force=config.force)

        compute.__name__ = asset
        compute.__doc__ = body.__doc__
        # Dagster finds the run configuration's class from the annotation
        compute.__annotations__ = {"context": dg.AssetExecutionContext, "config": config, "ego": EgoStorage}
        return dg.asset(
            name=asset, partitions_def=videos, backfill_policy=backfill_policy, group_name=group,
            code_version=code_version, deps=list(deps), kinds=set(kinds),
            op_tags=op_tags(stage), pool=pool(stage), check_specs=check_specs(asset, checks),
            description=description,
        )(compute)

    return decorate
