"""Quality checks as plain functions over stored tables (docs/architecture.md §8).

A check reads what one asset wrote for one partition and returns a :class:`CheckOutcome`. The Dagster
wiring turns them into asset checks (ERROR = blocking); ``ego-assets check`` runs the same functions over
everything materialized; both write the ``quality`` table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np

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


@dataclass(frozen=True)
class CheckDef:
    name: str
    asset: str
    severity: str
    description: str
    fn: Callable[[Store, str], tuple[bool, float | None, str]]

    def evaluate(self, store: Store, pk: str) -> CheckOutcome:
        try:
            passed, value, detail = self.fn(store, pk)
        except FileNotFoundError as e:
            passed, value, detail = False, None, f"not materialized: {e}"
        except Exception as e:  # a check that crashes fails, with the reason
            passed, value, detail = False, None, f"check raised {type(e).__name__}: {e}"
        return CheckOutcome(self.name, bool(passed), self.severity, value, detail)


# -- ingest checks ------------------------------------------------------------------------------

def video_decodable(store: Store, pk: str):
    v = store.read_table("videos", pk).to_pylist()[0]
    ok = v["n_frames"] >= 2 and v["duration_s"] > 0 and v["width"] > 0 and v["height"] > 0
    return ok, float(v["n_frames"]), (f"{v['n_frames']} frames, {v['duration_s']:.2f} s, "
                                      f"{v['width']}x{v['height']} {v['codec']}")


def clips_cover(store: Store, pk: str):
    v = store.read_table("videos", pk, ["duration_s"]).to_pylist()[0]
    rows = store.read_table("clips", pk).to_pylist()
    gaps = coverage_gaps(rows, v["duration_s"])
    bad_end = abs(max(r["end_s"] for r in rows) - v["duration_s"]) > 1e-6 if rows else True
    ok = bool(rows) and not gaps and not bad_end and min(r["start_s"] for r in rows) <= 1e-9
    gap = sum(b - a for a, b in gaps)
    return ok, gap, (f"{len(rows)} clips cover [0, {v['duration_s']:.3f}] s" if ok else
                     f"{len(rows)} clips; uncovered: {gaps[:5]}")


def frame_times(store: Store, pk: str):
    v = store.read_table("videos", pk, ["duration_s", "n_frames"]).to_pylist()[0]
    t = store.read_table("frames", pk, ["t_s"]).column("t_s").to_numpy()
    params = _params(store, "frames", pk)
    rate = float(params.get("rate_hz", frames_lib.FrameParams.rate_hz))
    exp = frames_lib.expected_count(v["duration_s"], v["n_frames"], rate)
    increasing = bool(len(t) > 0 and np.all(np.diff(t) > 0))
    tol = max(2, int(0.02 * exp))
    ok = increasing and abs(len(t) - exp) <= tol
    return ok, float(len(t)), (f"{len(t)} frames (expected {exp} ± {tol} at {rate:g} Hz over "
                               f"{v['duration_s']:.2f} s); timestamps "
                               f"{'strictly increasing' if increasing else 'NOT strictly increasing'}")


def proxy_count(store: Store, pk: str):
    n = store.read_table("frames", pk, ["frame_index"]).num_rows
    m = frames_lib.count_frames(store.local_path("frames", pk, "proxy.mp4"))
    return n == m, float(m), f"proxy has {m} frames, table has {n}"


def _params(store: Store, asset: str, pk: str) -> dict:
    ok = [r for r in store.lineage(asset, pk) if r["status"] == "ok"]
    return json.loads(ok[-1]["params"] or "{}") if ok else {}


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
