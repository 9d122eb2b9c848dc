"""Every ``EGO_ASSETS_*`` setting, declared once: its name, type, default and meaning.

The environment is the one source of settings (docs/architecture.md §10): the code server, the run
workers, the step pods and the CLI load the same definitions with the same environment, so they agree.
A module that needs a setting reads it here (``settings.get("HOME")``); the Dagster resource
(``ego_assets.defs.settings``) is built from the same table. The values are read when asked for, not at
import: a process that changes its environment (the CLI's ``--home``) is seen at once.

``python -m ego_assets.lib.settings`` prints the table (docs/architecture.md §10 carries it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

PREFIX = "EGO_ASSETS_"


@dataclass(frozen=True)
class Setting:
    name: str  # without the prefix: HOME is EGO_ASSETS_HOME
    type: Callable[[str], Any]
    default: Any
    doc: str
    blank_is_value: bool = False  # set but empty means "" (e.g. no node selector), not the default

    @property
    def var(self) -> str:
        return PREFIX + self.name

    def read(self, environ=None) -> Any:
        """The value from ``environ`` (default ``os.environ``); unset or blank: the default. A value that
        does not parse raises ValueError naming the variable."""
        raw = (os.environ if environ is None else environ).get(self.var)
        if raw is None or (not raw.strip() and not self.blank_is_value):
            return self.default
        try:
            return self.type(raw.strip())
        except ValueError as e:
            raise ValueError(f"{self.var}={raw!r}: {e}") from None


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(v: str) -> str:
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v
    parse.__name__ = "|".join(allowed)
    return parse


def _positive_int(v: str) -> int:
    n = int(v)
    if n < 1:
        raise ValueError("must be a positive integer")
    return n


def _shard(v: str) -> str:
    from ego_assets.lib.lerobot.shards import parse_shard  # the sharding's own rules, declared there

    return parse_shard(v)


def _flag(v: str) -> bool:
    return bool(v)  # set (to anything) is on


_ALL = [
    # -- storage and discovery
    Setting("HOME", str, "./.ego_assets", "The storage root: a folder or an fsspec URL (s3://bucket/prefix)."),
    Setting("SOURCES", str, None, "The sources file (default: sources.yaml under the home)."),
    Setting("CATALOG_DIR", str, None,
            "Where the DuckDB catalog file lives when the home is an object store (default ~/.cache/ego_assets)."),
    # -- runtime
    Setting("RUNTIME", _choice("local", "k8s"), "local",
            "local: steps run in the run's process; k8s: one pod per step (dagster-k8s)."),
    Setting("WORKERS", _positive_int, None,
            "Videos run side by side: `ego-assets run`'s workers and the UI's run queue (default: from the cores and the memory)."),
    Setting("RUN_START", _choice("warm", "fresh"), "warm",
            "How the UI's run queue starts a run's process: warm (forked from a process that imported the runs' "
            "libraries once) or fresh (Dagster's own: a new interpreter per run)."),
    Setting("LOG_LEVEL", str, "CRITICAL", "Dagster's console log level in `ego-assets run`."),
    Setting("SHOW_STEP_OUTPUT", _flag, False,
            "`ego-assets run` also prints what the steps write to stdout and stderr (libraries' messages) as they "
            "run (`-v` sets it); it is always in each run's compute logs (the UI's run page)."),
    Setting("DEBUG", _flag, False, "The CLI prints the traceback of an error."),
    # -- backends and models
    Setting("PLUGINS", str, "", "Comma-separated modules that register more backends."),
    Setting("CALIBRATION_BACKEND", str, "prior", "The calibrations backend (prior, depthpro, moge, ...)."),
    Setting("HANDS_BACKEND", str, "mediapipe", "The hand_tracks backend."),
    Setting("POSES_BACKEND", str, "opencv_vo", "The camera_poses backend."),
    Setting("CAPTIONS_BACKEND", str, "kinematic", "The captions backend (kinematic, openai_compat, ...)."),
    Setting("HAND_MODEL", str, None, "A hand_landmarker.task file to use instead of the provisioned one."),
    Setting("MODELS_DIR", str, None, "Where provisioned model files are kept."),
    Setting("DEPTHPRO_MODEL", str, None, "Depth Pro weights: a path or a Hugging Face id."),
    Setting("MOGE_MODEL", str, None, "MoGe weights: a path or a Hugging Face id."),
    Setting("VLM_BASE_URL", str, None, "An OpenAI-compatible endpoint for the openai_compat captions backend."),
    Setting("VLM_MODEL", str, None, "The model name at that endpoint."),
    Setting("VLM_API_KEY", str, None, "The API key of that endpoint (if it needs one)."),
    Setting("SKILLS_EMBEDDER", str, "kinematic", "How the skills step embeds a segment."),
    # -- the dataset (every episode of one dataset shares them)
    Setting("DATASET_FPS", _positive_int, 10,
            "Frames per second of the dataset, and the rate the frames asset samples at: one rate."),
    Setting("DATASET_IMAGE_SIZE", str, "640x480", "WIDTHxHEIGHT of every episode's frames."),
    Setting("DATASET_ACTION_SPACE", str, "hands_102", "The state/action space (hands_102, eef_7, bimanual_24)."),
    Setting("DATASET_SHARD", _shard, "",
            'Split the dataset: "" one dataset; "source" one per source; N at most N videos per shard.'),
    Setting("VALIDATE_MAX_EPISODES", _positive_int, 64, "Episodes whose first and last frames the dataset's validation decodes (both ends of each video file, up to this many)."),
    # -- Kubernetes (EGO_ASSETS_RUNTIME=k8s); defaults fit NVIDIA's device plugin + GPU feature discovery
    Setting("K8S_GPU_RESOURCE", str, "nvidia.com/gpu", "The GPU's extended resource name."),
    Setting("K8S_GPU_NODE_SELECTOR", str, "nvidia.com/gpu.present=true", "k=v,k2=v2 for GPU steps (empty: none).",
            blank_is_value=True),
    Setting("K8S_GPU_TOLERATIONS", str, "nvidia.com/gpu:NoSchedule", "key[=value][:effect],... for GPU steps (empty: none).",
            blank_is_value=True),
    Setting("K8S_GPU_MEMORY_LABEL", str, "nvidia.com/gpu.memory", "The node label with the GPU memory in MiB (empty: off).",
            blank_is_value=True),
    Setting("K8S_CPU_NODE_SELECTOR", str, "", "k=v,... for CPU steps.", blank_is_value=True),
    Setting("K8S_MEMORY_LIMIT_FACTOR", float, 1.5, "A step's memory limit over its request."),
    Setting("K8S_SCRATCH_GIB", float, 50.0, "Scratch space (TMPDIR) per step pod, GiB."),
]

SETTINGS: dict[str, Setting] = {s.name: s for s in _ALL}


def get(name: str, environ=None) -> Any:
    """The current value of setting ``name`` (``HOME`` for ``EGO_ASSETS_HOME``)."""
    return SETTINGS[name.removeprefix(PREFIX)].read(environ)


def var(name: str) -> str:
    """The environment variable of setting ``name``."""
    return SETTINGS[name.removeprefix(PREFIX)].var


def table() -> str:
    """The settings as a Markdown table (for the docs)."""
    rows = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for s in _ALL:
        t = getattr(s.type, "__name__", str(s.type)).lstrip("_")
        rows.append(f"| `{s.var}` | {t} | {'' if s.default is None else f'`{s.default}`'} | {s.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
