"""The warm template: a process that imported the libraries every video's run imports, once, from
which the processes that run the videos are forked (the UI's runs, ``defs.monitoring.LocalRunLauncher``;
the CLI's workers, ``defs.execute``), instead of a fresh interpreter per process that imports them again.

It is a multiprocessing forkserver: a fresh interpreter (started on first use, or by :func:`template`'s
``start``) that imports the modules and runs no thread, so forking it is safe (forking the daemon or
the CLI, which run threads, is not). No Dagster import here: the CLI starts the template before it
imports Dagster, so that the template's imports run beside its own.
"""

from __future__ import annotations

import multiprocessing
import threading

# What every video's run imports (Dagster's run worker, the steps' libraries). Third-party only: the
# UI's runs import the project's own code each, so a run after an edit (and the UI's reload) runs the
# edited code.
RUN_WORKER_MODULES = ("dagster._cli.api", "dagster._core.storage.event_log.sqlite",
                      "dagster._core.storage.runs.sqlite", "dagster._core.storage.schedules.sqlite",
                      "numpy", "pyarrow.parquet", "pyarrow.dataset", "pandas", "duckdb", "av", "cv2", "mediapipe",
                      "scipy.ndimage", "scipy.signal", "scipy.optimize", "scipy.spatial.transform",
                      "matplotlib.pyplot", "httpx", "upath")

# The project's definitions, with every step's module: imported by the template too where its life is
# one command's (the CLI's workers), so each worker starts with them (~0.6 s each otherwise).
PROJECT_MODULES = ("ego_assets.definitions", "ego_assets.defs.execute")

_lock = threading.Lock()
_template: multiprocessing.context.BaseContext | None = None
_preload: list[str] = []


def available() -> bool:
    """Whether this platform can fork from a template (no forkserver on Windows)."""
    return "forkserver" in multiprocessing.get_all_start_methods()


def template(extra: tuple[str, ...] = (), start: bool = False) -> multiprocessing.context.BaseContext:
    """The multiprocessing context whose processes are forked from the template, which imports
    :data:`RUN_WORKER_MODULES` and ``extra`` (modules asked for after the template started are not
    in it). ``start``: start the template now, so that its imports run while the caller goes on
    (else it starts with the first process)."""
    global _template
    with _lock:
        if _template is None:
            _template = multiprocessing.get_context("forkserver")
        for m in (*RUN_WORKER_MODULES, *extra):
            if m not in _preload:
                _preload.append(m)
        _template.set_forkserver_preload(list(_preload))
        if start:
            from multiprocessing import forkserver

            forkserver.ensure_running()
        return _template


def adopt_environment(environ: dict[str, str]) -> None:
    """In a process forked from the template: take ``environ`` (its launcher's at the launch) in place of
    the template's, which is the one the template started with."""
    import os

    os.environ.clear()
    os.environ.update(environ)
