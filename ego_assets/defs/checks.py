"""Every check of every asset, for `ego-assets check` (the assets evaluate their own after each write)."""

from __future__ import annotations

from ego_assets.lib.quality import CheckDef, CheckInput, CheckOutcome
from ego_assets.lib.storage import Store


def _per_video_assets() -> set[str]:
    from ego_assets.defs.execute import per_video_assets
    from ego_assets.definitions import defs

    return set(per_video_assets(defs))


def all_checks() -> list[CheckDef]:
    from ego_assets.definitions import ASSET_MODULES

    return [c for m in ASSET_MODULES for c in getattr(m, "CHECKS", [])]


class QualityWriter:
    """Writes check results to ``quality``; on a home that cannot be written (a read-only mount, a
    full disk) the checks are still evaluated and reported, and ``unwritable`` says why."""

    def __init__(self, store: Store):
        self.store, self.unwritable = store, None

    def write(self, asset: str, pk: str, rows: list[dict]) -> None:
        if self.unwritable:
            return
        try:
            self.store.write_quality(asset, pk, rows)
        except OSError as e:
            self.unwritable = f"{getattr(e, 'filename', None) or self.store.root}: {e.strerror or e}"




def evaluate_all(store: Store, source: str | None = None,
                 quality: QualityWriter | None = None) -> list[tuple[str, str, CheckOutcome]]:
    """Evaluate every check on every registered video that has the check's asset materialized (or that
    failed in it); writes the ``quality`` table (best effort, see :class:`QualityWriter`); returns
    (partition, asset, outcome) rows."""
    quality = quality or QualityWriter(store)
    per_video = _per_video_assets()
    out = []
    for pk in store.registered():
        if source and store.video_record(pk).get("source") != source:
            continue
        inputs: dict[str, CheckInput] = {}  # per asset: each table read once for all its checks
        for c in all_checks():
            inp = inputs.setdefault(c.asset, CheckInput(store, pk, c.asset))
            rows = store.lineage(c.asset, pk)
            if not rows and c.asset not in per_video:
                # an asset over all videos (skills) that has not seen this video: its check says
                # whether that matters (a video with no valid segment needs no skill)
                o = c.evaluate(inp)
            elif not rows:
                # a registered video whose asset never ran is not "passing": the gate must see it
                o = CheckOutcome(c.name, False, c.severity, None,
                                 f"{c.asset} never ran for this video ({store.video_uri(pk, pk)})")
                out.append((pk, c.asset, o))
                continue
            elif (last := rows[-1])["status"] in ("failed", "skipped") and not store.committed(c.asset, pk):
                o = CheckOutcome(c.name, False, c.severity, None,
                                 f"{c.asset} {last['status']}: {last['error']}")
            else:
                o = c.evaluate(inp)
            quality.write(c.asset, pk, [o.row(c.asset)])
            out.append((pk, c.asset, o))
    if source is None:
        out.extend(("dataset", "lerobot_dataset", o) for o in dataset_outcomes(store, quality))
    return out


def expected_dataset_missing(store: Store) -> str | None:
    """Why a dataset should exist and does not, or None. It should exist once its step has run (its
    last attempt failed, or it succeeded and the folder is gone) or once a video went all the way
    through the per-video assets."""
    rows = store.lineage("lerobot_dataset", "dataset")
    last = rows[-1] if rows else None
    if last is not None and last["status"] != "ok":
        return f"the dataset step {last['status']}: {last['error']}"
    if last is not None:
        return "the dataset step succeeded but its folder has no meta/info.json (deleted or moved?)"
    # the dataset's per-video input: lerobot_episodes (videos with episodes) where it exists
    last_asset = next((a for a in ("lerobot_episodes", "captions")
                       if store.fs.exists(store.join("lineage", a))), "captions")
    complete = [pk for pk in store.registered()
                if (r := store.lineage(last_asset, pk)) and r[-1]["status"] == "ok"]
    if complete:
        return (f"{len(complete)} video(s) passed {last_asset} but the dataset was never assembled "
                "(ego-assets run, or the dataset_automation sensor, assembles it)")
    return None


def dataset_outcomes(store: Store, quality: QualityWriter | None = None) -> list[CheckOutcome]:
    """The dataset's validation (load with LeRobotDataset, decode, lengths, stats) if it exists; an
    ERROR ``dataset_exists`` when it should exist and does not. Sharded (``EGO_ASSETS_DATASET_SHARD``):
    every shard is validated against its own videos' episodes, and a check passes when it passes on
    every shard (each shard's detail kept), as the dataset step records it."""
    from ego_assets.defs.dataset import (WARN_ONLY, DatasetConfig, dataset_roots, merge_shard_quality,
                                         shard_videos)

    quality = quality or QualityWriter(store)
    roots = {n: r for n, r in dataset_roots(store).items() if store.exists(f"{r}/meta/info.json")}
    if not roots:
        why = expected_dataset_missing(store)
        if why is None:
            return []
        where = ", ".join(dataset_roots(store).values()) or "any shard"
        o = CheckOutcome("dataset_exists", False, "ERROR", None, f"no dataset at {where}: {why}")
        quality.write("lerobot_dataset", "dataset", [o.row("lerobot_dataset")])
        return [o]
    from ego_assets.lib import catalog
    from ego_assets.lib.lerobot.validate import validate_dataset

    con = catalog.connect(store, in_memory=True)
    try:
        episodes = con.sql("select * from episodes").to_arrow_table()
    finally:
        con.close()
    videos = shard_videos(store)
    repo_id = DatasetConfig().repo_id
    per_shard: dict[str, list[dict]] = {}
    for shard, root in roots.items():
        eps = episodes
        if shard:
            keep = [pk in videos.get(shard, set()) for pk in episodes.column("partition_key").to_pylist()]
            eps = episodes.filter(keep)
        with store.working_copy(root, readonly=True) as local:  # the folder itself on a filesystem root
            per_shard[shard] = [CheckOutcome(name, bool(ok), "WARN" if name in WARN_ONLY else "ERROR",
                                             None if value is None else float(value), str(detail)).row("lerobot_dataset")
                                for name, ok, value, detail in validate_dataset(
                                    local, eps, max_episodes=50, repo_id=f"{repo_id}-{shard}" if shard else None)]
    rows = per_shard[""] if list(per_shard) == [""] else merge_shard_quality(per_shard)
    outs = [CheckOutcome(r["check_name"], r["passed"], r["severity"], r["value"], r["detail"]) for r in rows]
    quality.write("lerobot_dataset", "dataset", [o.row("lerobot_dataset") for o in outs])
    return outs
