"""Captioner backends of the ``captions`` stage (selected by ``EGO_ASSETS_CAPTIONS_BACKEND``).

Interface (every backend)::

    backend.caption(segments, hand_world, frames, proxy_path, calib, camera_poses, out_dir,
                    progress=None) -> CaptionResult

``segments``/``hand_world``/``frames``/``camera_poses`` are the stage tables of one partition, ``calib`` its
calibration row (a dict), ``proxy_path`` the proxy video (local path), ``out_dir`` where overlay images go
(local path or fsspec URL). ``CaptionResult.captions`` has one row per segment (columns of ``captions``
without partition_key); ``.stats`` holds counts and timings for the asset's metadata.

Built-ins: ``kinematic`` (offline default: captions from the measured motion) and ``openai`` (any
OpenAI-compatible VLM endpoint, shown overlay frames). Both give N/A (``valid=False``) to segments that
failed the segmentation quality filter, unless ``skip_invalid_segments=False``: they will not become
episodes, so they are not worth a request.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable

import pyarrow as pa

from ego_assets.lib import settings
from ego_assets.lib.backends import Backend, Resources, register
from ego_assets.lib.captions import kinematic as kin
from ego_assets.lib.captions import openai_compat as oai
from ego_assets.lib.captions.base import (NA, CaptionError, CaptionResult, SegmentView, captions_table, join,
                                          read_json, segment_views, write_bytes, write_json)

Progress = Callable[[int, int], None] | None


def _overlay_name(view: SegmentView, k: int) -> str:
    return f"segment_{view.segment_id:05d}_{view.hand}_{k}.jpg"


def write_overlays(out_dir: str, views: list[SegmentView], overlays: dict[int, list[tuple[int, bytes]]],
                   keep_all: bool) -> dict[int, str | None]:
    """Write the first overlay of each segment (all of them with ``keep_all``) into ``out_dir``;
    segment_id -> URI of the first (the UI preview), None when there is none."""
    uris: dict[int, str | None] = {}
    for v in views:
        imgs = overlays.get(v.segment_id) or []
        uris[v.segment_id] = None
        for k, (_f, jpeg) in enumerate(imgs if keep_all else imgs[:1], start=1):
            path = join(out_dir, _overlay_name(v, k))
            write_bytes(path, jpeg)
            if k == 1:
                uris[v.segment_id] = path
    return uris


def _skipped_row(view: SegmentView) -> dict:
    return dict(instruction=NA, valid=False,
                reasoning=f"Not captioned: the segment failed its quality filter ({view.invalid_reason}).")


@register("captions")
class KinematicCaptioner(Backend):
    """Offline default: instructions from the measured world-frame motion (not a vision model)."""

    name = "kinematic"
    version = "2"  # 2: closed vocabulary, numbers in details
    resources = Resources(gpu=0, cpu=1.0, memory_gib=1.0)
    description = "instruction from the measured hand motion (direction, distance, grasp); no vision model"

    def __init__(self, params: kin.KinematicParams | None = None, overlay_frames: int = 1,
                 skip_invalid_segments: bool = True, cache_dir: str | None = None, undistort=None):
        # cache_dir is accepted so that the wiring can build every backend the same way; nothing here
        # is worth caching
        self.params = params or kin.KinematicParams()
        self.overlay_frames = overlay_frames
        self.skip_invalid_segments = skip_invalid_segments
        self.undistort = undistort

    def caption(self, segments: pa.Table, hand_world: pa.Table, frames: pa.Table, proxy_path: str | None,
                calib: dict | None, camera_poses: pa.Table, out_dir: str | None,
                progress: Progress = None) -> CaptionResult:
        from ego_assets.lib.captions.overlay import render_overlays

        t0 = time.perf_counter()
        views = segment_views(segments, hand_world, camera_poses)
        uris: dict[int, str | None] = {}
        if proxy_path and calib and out_dir and self.overlay_frames > 0 and views:
            overlays = render_overlays(proxy_path, views, calib, self.overlay_frames, self.undistort)
            uris = write_overlays(out_dir, views, overlays, keep_all=True)
        rows = []
        for i, v in enumerate(views):
            if self.skip_invalid_segments and not v.valid:
                d = _skipped_row(v)
            else:
                d = kin.describe(v, self.params)
            rows.append(dict(segment_id=v.segment_id, hand=v.hand, captioner=self.name, model=kin.MODEL,
                             prompt_version=kin.PROMPT_VERSION, overlay_uri=uris.get(v.segment_id), **d))
            if progress:
                progress(i + 1, len(views))
        table = captions_table(rows)
        n_valid = sum(r["valid"] for r in rows)
        return CaptionResult(self.name, table, dict(segments=len(rows), valid=n_valid, na=len(rows) - n_valid,
                                         seconds=round(time.perf_counter() - t0, 3)))


@register("captions")
class OpenAICaptioner(Backend):
    """Any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, hosted), shown overlay frames."""

    name = "openai"
    version = "1"
    resources = Resources(gpu=0, cpu=1.0, memory_gib=2.0)  # the model runs behind the endpoint
    description = "VLM behind an OpenAI-compatible endpoint (EGO_ASSETS_VLM_BASE_URL / _MODEL / _API_KEY)"

    @classmethod
    def code_version(cls) -> str:
        # switching the model or the prompt must mark the captions stale
        model = settings.get("VLM_MODEL") or "unset"
        return f"{cls.name}@{cls.version}+{oai.PROMPT_VERSION}+{model}"

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 cache_dir: str | None = None, n_overlay_frames: int = 4, concurrency: int = 4,
                 timeout_s: float = 60.0, max_retries: int = 4, max_format_retries: int = 2,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0, skip_invalid_segments: bool = True,
                 keep_all_overlays: bool = False, undistort=None):
        self.base_url = (base_url or settings.get("VLM_BASE_URL") or "").strip()
        self.model = (model or settings.get("VLM_MODEL") or "").strip()
        self._api_key = (api_key or settings.get("VLM_API_KEY") or "").strip() or None
        self.cache_dir = cache_dir
        self.n_overlay_frames = max(1, int(n_overlay_frames))
        self.concurrency = max(1, int(concurrency))
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_format_retries = max_format_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.skip_invalid_segments = skip_invalid_segments
        self.keep_all_overlays = keep_all_overlays
        self.undistort = undistort

    def __repr__(self) -> str:  # never the key
        return (f"OpenAICaptioner(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key={'set' if self._api_key else 'unset'}, cache_dir={self.cache_dir!r})")

    def client(self) -> oai.ChatClient:
        return oai.ChatClient(self.base_url, self.model, self._api_key, timeout_s=self.timeout_s,
                              max_retries=self.max_retries, backoff_s=self.backoff_s,
                              max_backoff_s=self.max_backoff_s)

    def _cache_path(self, key: str) -> str | None:
        return join(self.cache_dir, key[:2], key + ".json") if self.cache_dir else None

    def caption(self, segments: pa.Table, hand_world: pa.Table, frames: pa.Table, proxy_path: str,
                calib: dict, camera_poses: pa.Table, out_dir: str,
                progress: Progress = None) -> CaptionResult:
        from ego_assets.lib.captions.overlay import render_overlays

        t0 = time.perf_counter()
        client = self.client()  # configuration errors surface before any work
        if not proxy_path:
            raise ValueError("openai captioner: proxy_path is required (the model is shown frames)")
        views = segment_views(segments, hand_world, camera_poses)
        overlays = render_overlays(proxy_path, views, calib or {}, self.n_overlay_frames, self.undistort)
        uris = write_overlays(out_dir, views, overlays, self.keep_all_overlays) if out_dir else {}
        base = dict(captioner=self.name, model=self.model, prompt_version=oai.PROMPT_VERSION)
        rows: dict[int, dict] = {}
        todo = []
        stats = dict(segments=len(views), cache_hits=0, skipped_invalid=0, malformed=0, failed=0)
        for v in views:
            common = dict(segment_id=v.segment_id, hand=v.hand, overlay_uri=uris.get(v.segment_id), **base)
            if self.skip_invalid_segments and not v.valid:
                rows[v.segment_id] = dict(common, **_skipped_row(v))
                stats["skipped_invalid"] += 1
                continue
            images = [b for _f, b in overlays.get(v.segment_id, [])]
            text = oai.user_text(v, len(images))
            key = oai.cache_key(oai.content_hash(v.hand, text, images), oai.PROMPT_VERSION, self.model)
            cached = read_json(self._cache_path(key)) if self.cache_dir else None
            if cached and {"instruction", "reasoning", "valid"} <= set(cached):
                rows[v.segment_id] = dict(common, instruction=cached["instruction"],
                                          reasoning=cached["reasoning"], valid=bool(cached["valid"]),
                                          details=cached.get("details"))
                stats["cache_hits"] += 1
                continue
            todo.append((v, common, text, images, key))

        done = len(rows)
        total = len(views)
        if progress and done:
            progress(done, total)
        errors: list[str] = []
        not_tried = 0

        stop = threading.Event()

        def work(item):
            v, common, text, images, key = item
            if stop.is_set():
                return v, None, "not_tried"
            try:
                ans, n_bad = oai.ask(client, text, images, self.max_format_retries, hand=v.hand)
            except CaptionError:
                # the endpoint is down or refuses us: stop sending (requests in flight finish and are
                # cached) rather than spend the retries on every remaining segment
                stop.set()
                raise
            except oai.MalformedAnswer as e:
                return v, dict(common, instruction=NA, valid=False,
                               reasoning=f"The model's answers were malformed ({e})."), "malformed"
            if self.cache_dir:
                write_json(self._cache_path(key), dict(ans, model=self.model, prompt_version=oai.PROMPT_VERSION,
                                                       segment_id=v.segment_id, hand=v.hand))
            return v, dict(common, **ans), ("corrected" if n_bad else "ok")

        try:
            if todo:
                with ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo))) as pool:
                    futures = [pool.submit(work, it) for it in todo]
                    for fut in as_completed(futures):
                        try:
                            v, row, how = fut.result()
                        except CaptionError as e:
                            errors.append(str(e))
                            continue
                        if how == "not_tried":
                            not_tried += 1
                            continue
                        rows[v.segment_id] = row
                        if how == "malformed":
                            stats["malformed"] += 1
                        done += 1
                        if progress:
                            progress(done, total)
        finally:
            client.close()  # its connection pool
        stats.update(requests=client.stats.requests, retries=client.stats.retries,
                     throttled=client.stats.throttled, server_errors=client.stats.server_errors,
                     timeouts=client.stats.timeouts, failed=len(errors),
                     seconds=round(time.perf_counter() - t0, 3))
        if errors:
            raise CaptionError(f"captioning stopped: {len(errors)} segment(s) failed, {not_tried} not tried "
                               f"(answers received are cached for the rerun); first error: {errors[0]}")
        table = captions_table(list(rows.values()))
        stats["valid"] = int(sum(r["valid"] for r in rows.values()))
        stats["na"] = len(rows) - stats["valid"]
        return CaptionResult(self.name, table, stats)
