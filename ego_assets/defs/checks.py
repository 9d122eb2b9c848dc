"""Every check of every asset, for `ego-assets check` (the assets evaluate their own after each write)."""

from __future__ import annotations

from ego_assets.lib.quality import CheckDef, CheckOutcome
from ego_assets.lib.storage import Store


def all_checks() -> list[CheckDef]:
    from ego_assets.definitions import ASSET_MODULES

    return [c for m in ASSET_MODULES for c in getattr(m, "CHECKS", [])]


def evaluate_all(store: Store, source: str | None = None) -> list[tuple[str, str, CheckOutcome]]:
    """Evaluate every check on every registered video that has the check's asset materialized (or that
    failed in it); writes the ``quality`` table; returns (partition, asset, outcome) rows."""
    out = []
    for pk in store.registered():
        if source and store.video_record(pk).get("source") != source:
            continue
        for c in all_checks():
            rows = store.lineage(c.asset, pk)
            if not rows:
                # a registered video whose asset never ran is not "passing": the gate must see it
                o = CheckOutcome(c.name, False, c.severity, None,
                                 f"{c.asset} never ran for this video ({store.video_uri(pk, pk)})")
                out.append((pk, c.asset, o))
                continue
            last = rows[-1]
            if last["status"] in ("failed", "skipped") and not store.committed(c.asset, pk):
                o = CheckOutcome(c.name, False, c.severity, None,
                                 f"{c.asset} {last['status']}: {last['error']}")
            else:
                o = c.evaluate(store, pk)
            store.write_quality(c.asset, pk, [o.row(c.asset)])
            out.append((pk, c.asset, o))
    if source is None:
        out.extend(("dataset", "lerobot_dataset", o) for o in dataset_outcomes(store))
    return out


def dataset_outcomes(store: Store) -> list[CheckOutcome]:
    """The dataset's validation (load with LeRobotDataset, decode, lengths, stats), if it exists."""
    from ego_assets.defs.dataset import WARN_ONLY, dataset_dir

    root = dataset_dir(store)
    if not store.exists(f"{root}/meta/info.json"):
        return []
    from ego_assets.lib import catalog
    from ego_assets.lib.lerobot.validate import validate_dataset

    con = catalog.connect(store, in_memory=True)
    try:
        episodes = con.sql("select * from episodes").to_arrow_table()
    finally:
        con.close()
    with store.working_copy(root, readonly=True) as local:  # the folder itself on a filesystem root
        outs = [CheckOutcome(name, bool(ok), "WARN" if name in WARN_ONLY else "ERROR",
                             None if value is None else float(value), str(detail))
                for name, ok, value, detail in validate_dataset(local, episodes, max_episodes=50)]
    store.write_quality("lerobot_dataset", "dataset", [o.row("lerobot_dataset") for o in outs])
    return outs
