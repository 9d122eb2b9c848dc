"""How many cores the work running now may use (``cores()``), set by whoever knows (``using(n)``).

A backfill's parallelism is its videos: one video per worker process (or per run under the UI), one
worker per core. A lib stage that can split its own work (the hands' landmarker over chunks of frames,
OpenCV's loops) then has one core and must not take more: extra threads would only compete with the
other videos (and OpenCV's spin while they wait). A video that runs alone (one long video, or the last
video of a backfill while the other workers are idle) has the machine: the same stage may then use
every core. Only the orchestration knows which case it is in (``defs.runner`` counts this machine's
running runs), so it sets the figure for the duration of a step and the lib reads it. Outside a step
(tests, benchmarks, a notebook) the figure is 1: single-threaded, unless the caller says otherwise.
"""

from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from typing import Iterator

_cores: ContextVar[int] = ContextVar("ego_assets_cores", default=1)


def cores() -> int:
    """The cores the current work may use (>= 1)."""
    return _cores.get()


@contextlib.contextmanager
def using(n: int) -> Iterator[int]:
    """Let the work inside the block use ``n`` cores (at least 1)."""
    token = _cores.set(max(1, int(n)))
    try:
        yield _cores.get()
    finally:
        _cores.reset(token)


def machine_cores() -> int:
    """The cores this process may run on: its CPU affinity, bounded by a cgroup CPU quota where one is
    set (a Kubernetes pod's CPU limit: ``cpu.max`` of cgroup v2, or v1's ``cpu.cfs_quota_us``)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, int(quota)))  # a fractional limit (1.5 CPU) gets the whole cores below it
    return max(1, n)


def _cgroup_quota() -> float | None:
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:  # cgroup v2: "max 100000" or "150000 100000"
            q, period = f.read().split()[:2]
            return None if q == "max" else int(q) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            q = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        return None if q <= 0 else q / period
    except (OSError, ValueError):
        return None


# How many videos run at once (the CLI's worker processes, the UI's run queue: defs/execute.py).
# What one worker process may hold at its peak with the default backends, with headroom (measured:
# the CLI and two workers peaked at 2.2 GiB together on 15 s 1080p clips, benchmarks/throughput.py; one
# process ~0.7 GiB on a 10 min video, long_video.py; the proxy frames a worker keeps for a video's steps
# are bounded by lib/video.DECODE_CACHE_MIB, 0.25 GiB): the default number of workers never plans for
# more than the memory available.
WORKER_MEMORY_GIB = 1.5


def default_workers(n_videos: int, memory=None) -> int:
    """How many videos run at once: the ``WORKERS`` setting, else one per core, but no more than the
    available memory (``memory()``, GiB: default the memory available now) holds at WORKER_MEMORY_GIB
    each (each worker process holds its own models)."""
    from ego_assets.lib import settings

    n = settings.get("WORKERS")
    if n is None:
        n = machine_cores()
        avail = (memory or _available_memory_gib)()
        if avail is not None:
            n = min(n, int(avail // WORKER_MEMORY_GIB))
    return max(1, min(n, n_videos))


def _meminfo_gib(field: str) -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return None


def _available_memory_gib() -> float | None:
    return _meminfo_gib("MemAvailable")


def total_memory_gib() -> float | None:
    return _meminfo_gib("MemTotal")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (one owned by another user counts as running; a zombie,
    ended but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
