"""Quality checks (docs/architecture.md §8): one shape for every check of every asset.

A :class:`CheckDef` names a check of one asset and holds a function of a :class:`CheckInput`: the tables
the asset has just produced for one video (in memory, as written: a check right after the asset's body
reads nothing back) and the store for anything else (read once per table and kept). The function
returns ``(passed, value, detail)``; a check that raises fails with the reason. The Dagster wiring
turns the checks into asset checks (ERROR = blocking) evaluated after each write; ``ego-assets check``
evaluates the same checks over everything materialized (the tables then come from the store); both
write the ``quality`` table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa

from ego_assets.lib import frames as frames_lib
from ego_assets.lib.clips import coverage_gaps
from ego_assets.lib.storage import Store

ERROR, WARN = "ERROR", "WARN"


@dataclass
class CheckOutcome:
    check_name: str
    passed: bool
    severity: str
    value: float | None
    detail: str

    def row(self, asset: str) -> dict:
        return dict(asset=asset, check_name=self.check_name, passed=bool(self.passed),
                    severity=self.severity, value=None if self.value is None else float(self.value),
                    detail=self.detail)


@dataclass
class CheckInput:
    """What the checks of ``asset`` read for video ``pk``: ``produced`` holds the tables the asset has just
    written (empty when the checks run over the store); any other table is read from the store once and
    kept for the next check. ``params``: the parameters of the attempt being checked (None: those of the
    asset's latest successful attempt, from the lineage)."""

    store: Store
    pk: str
    asset: str
    produced: dict[str, pa.Table] = field(default_factory=dict)
    params: dict | None = None
    _read: dict[str, pa.Table] = field(default_factory=dict, repr=False)

    def table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        t = self.produced.get(name)
        if t is None:
            t = self._read.get(name)
        if t is None:
            t = self._read[name] = self.store.read_table(name, self.pk)
        return t.select(columns) if columns else t

    def has_table(self, name: str) -> bool:
        return name in self.produced or name in self._read or self.store.has_table(name, self.pk)

    def attempt_params(self) -> dict:
        if self.params is None:
            ok = [r for r in self.store.lineage(self.asset, self.pk) if r["status"] == "ok"]
            self.params = json.loads(ok[-1]["params"] or "{}") if ok else {}
        return self.params


CheckFn = Callable[[CheckInput], "tuple[bool, float | None, str]"]


@dataclass(frozen=True)
class CheckDef:
    name: str
    asset: str
    severity: str
    description: str
    fn: CheckFn

    def evaluate(self, inp: CheckInput) -> CheckOutcome:
        try:
            passed, value, detail = self.fn(inp)
        except FileNotFoundError as e:
            passed, value, detail = False, None, f"not materialized: {e}"
        except Exception as e:  # a check that crashes fails, with the reason
            passed, value, detail = False, None, f"check raised {type(e).__name__}: {e}"
        return CheckOutcome(self.name, bool(passed), self.severity, value, detail)


# -- ingest checks ------------------------------------------------------------------------------

def video_decodable(inp: CheckInput):
    v = inp.table("videos").to_pylist()[0]
    ok = v["n_frames"] >= 2 and v["duration_s"] > 0 and v["width"] > 0 and v["height"] > 0
    return ok, float(v["n_frames"]), (f"{v['n_frames']} frames, {v['duration_s']:.2f} s, "
                                      f"{v['width']}x{v['height']} {v['codec']}")


def clips_cover(inp: CheckInput):
    v = inp.table("videos", ["duration_s"]).to_pylist()[0]
    rows = inp.table("clips").to_pylist()
    gaps = coverage_gaps(rows, v["duration_s"])
    bad_end = abs(max(r["end_s"] for r in rows) - v["duration_s"]) > 1e-6 if rows else True
    ok = bool(rows) and not gaps and not bad_end and min(r["start_s"] for r in rows) <= 1e-9
    gap = sum(b - a for a, b in gaps)
    return ok, gap, (f"{len(rows)} clips cover [0, {v['duration_s']:.3f}] s" if ok else
                     f"{len(rows)} clips; uncovered: {gaps[:5]}")


def frame_times(inp: CheckInput):
    v = inp.table("videos", ["duration_s", "n_frames"]).to_pylist()[0]
    t = inp.table("frames", ["t_s"]).column("t_s").to_numpy()
    rate = float(inp.attempt_params().get("rate_hz", frames_lib.FrameParams.rate_hz))
    exp = frames_lib.expected_count(v["duration_s"], v["n_frames"], rate)
    increasing = bool(len(t) > 0 and np.all(np.diff(t) > 0))
    tol = max(2, int(0.02 * exp))
    ok = increasing and abs(len(t) - exp) <= tol
    return ok, float(len(t)), (f"{len(t)} frames (expected {exp} ± {tol} at {rate:g} Hz over "
                               f"{v['duration_s']:.2f} s); timestamps "
                               f"{'strictly increasing' if increasing else 'NOT strictly increasing'}")


def proxy_count(inp: CheckInput):
    n = inp.table("frames", ["frame_index"]).num_rows
    m = frames_lib.count_frames(inp.store.local_path("frames", inp.pk, "proxy.mp4"))
    return n == m, float(m), f"proxy has {m} frames, table has {n}"


INGEST_CHECKS = [
    CheckDef("video_decodable", "source_videos", ERROR,
             "The source is a decodable video with at least 2 frames and a positive duration.",
             video_decodable),
    CheckDef("clips_cover_video", "clips", ERROR,
             "Clips cover [0, duration] with no gap.", clips_cover),
    CheckDef("frame_times_consistent", "frames", ERROR,
             "Frame timestamps strictly increase and their count matches duration x rate.", frame_times),
    CheckDef("proxy_frame_count", "frames", ERROR,
             "The proxy video decodes to as many frames as the frames table has.", proxy_count),
]
