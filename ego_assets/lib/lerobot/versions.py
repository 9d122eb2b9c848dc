"""Versioned publication of an assembled dataset: each assembly goes to a new version folder under
``<dataset>.versions/``, published by an atomic symlink swap (readers never see a half-written dataset);
the previous version stays until the next publish."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from ego_assets.lib.lerobot.assembly import AssemblyResult, assemble, link_or_copy, write_atomic
from ego_assets.lib.lerobot.layout import TMP_DIR
from ego_assets.lib.lerobot.staging import StagedPartition
from ego_assets.lib.parallel import pid_alive


# ----------------------------------------------------------------------------------------------------------
# versions: readers never see a dataset half-assembled
#
# ``<datasets>/<name>`` is a symbolic link to a complete version folder ``<datasets>/.<name>.versions/v…``.
# An assembly works on a new version folder (a clone of the published one whose video and data files are
# hard links: nothing is re-encoded or copied; every file the assembly changes is written anew, never in
# place) and publishes it by replacing the link in one rename. Killed at any moment, it leaves the published
# version as it was and a folder the next assembly removes. The previous version stays until the next
# publish, so a reader that resolved the link just before a publish (``os.path.realpath``) keeps its files.

VERSIONS_SUFFIX = ".versions"
_PREVIOUS = "previous"


def versions_dir(dataset_dir: str | Path) -> Path:
    p = Path(dataset_dir)
    return p.parent / f".{p.name}{VERSIONS_SUFFIX}"


def published_version(dataset_dir: str | Path) -> Path | None:
    """The folder readers of ``dataset_dir`` see now (None when there is no dataset yet)."""
    p = Path(dataset_dir)
    if p.is_symlink():
        r = p.resolve()
        return r if r.is_dir() else None
    return p if p.is_dir() else None  # a dataset assembled in place (before versions)


def _prune_versions(dataset_dir: str | Path) -> list[str]:
    """Remove version folders that are neither published, nor the previous one, nor being written by a
    live process (leftovers of killed assemblies, superseded versions). Returns their names."""
    vd = versions_dir(dataset_dir)
    if not vd.is_dir():
        return []
    cur = published_version(dataset_dir)
    prev = (vd / _PREVIOUS).read_text().strip() if (vd / _PREVIOUS).is_file() else None
    gone = []
    for d in vd.iterdir():
        if not d.is_dir() or (cur is not None and d.resolve() == cur) or d.name == prev:
            continue
        pid = d.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue  # another assembly is writing it
        shutil.rmtree(d, ignore_errors=True)
        gone.append(d.name)
    return gone


def new_version(dataset_dir: str | Path) -> Path:
    """A new, unpublished version folder holding the published version: its video and data files hard-linked
    (copied where links are not possible), its metadata copied (LeRobot rewrites those in place)."""
    vd = versions_dir(dataset_dir)
    vd.mkdir(parents=True, exist_ok=True)
    _prune_versions(dataset_dir)
    dst = vd / f"v{time.time_ns()}-{os.getpid()}"
    dst.mkdir()
    cur = published_version(dataset_dir)
    if cur is not None:
        for f in sorted(cur.rglob("*")):
            rel = f.relative_to(cur)
            if rel.parts[0] == TMP_DIR or f.is_dir():
                continue
            t = dst / rel
            t.parent.mkdir(parents=True, exist_ok=True)
            if rel.parts[0] in ("data", "videos"):
                link_or_copy(f, t)
            else:
                shutil.copy2(f, t)
    return dst


def publish_version(dataset_dir: str | Path, version: str | Path) -> None:
    """Make ``version`` what ``dataset_dir`` shows, in one rename of the link."""
    p, version = Path(dataset_dir), Path(version)
    vd = versions_dir(p)
    old = published_version(p)
    if p.exists() and not p.is_symlink():  # a dataset assembled in place: kept as the previous version
        old = vd / f"v0-{os.getpid()}"
        os.replace(p, old)
    link = p.with_name(f".{p.name}.link-{os.getpid()}")
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(version, p.parent), link)
    os.replace(link, p)
    if old is not None:
        write_atomic(vd / _PREVIOUS, lambda t: t.write_text(old.name))
    _prune_versions(p)


def assemble_versioned(dataset_dir: str | Path, staged: Sequence[StagedPartition | str | Path], *,
                       accept: Callable[[Path, AssemblyResult], bool] | None = None,
                       **kwargs) -> tuple[AssemblyResult, Path, bool]:
    """``assemble`` into a new version of ``dataset_dir`` and publish it when ``accept(version_dir, result)``
    (e.g. the validation) says so; otherwise the published version stays and the new one is removed.
    Returns (result, version folder, published)."""
    ver = new_version(dataset_dir)
    try:
        res = assemble(ver, staged, **kwargs)
        ok = accept(ver, res) if accept is not None else True
    except BaseException:
        shutil.rmtree(ver, ignore_errors=True)
        raise
    if not ok:
        shutil.rmtree(ver, ignore_errors=True)
        return res, ver, False
    publish_version(dataset_dir, ver)
    return res, ver, True
