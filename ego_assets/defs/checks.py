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
                continue
            last = rows[-1]
            if last["status"] in ("failed", "skipped") and not store.committed(c.asset, pk):
                o = CheckOutcome(c.name, False, c.severity, None,
                                 f"{c.asset} {last['status']}: {last['error']}")
            else:
                o = c.evaluate(store, pk)
            store.write_quality(c.asset, pk, [o.row(c.asset)])
            out.append((pk, c.asset, o))
    return out
