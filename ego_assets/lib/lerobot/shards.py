"""Sharding the dataset (issue 19 item 4): several LeRobot v3.0 datasets instead of one, when one would
hold more than a LeRobot dataset should (about 100,000 episodes) or than Dagster advises per asset.

``EGO_ASSETS_DATASET_SHARD`` (lib/settings.py) says how videos are split:

- ``""`` (default): one dataset, no shard.
- ``"source"``: one dataset per source (the shard's name is the source's name).
- ``N`` (a positive integer): at most N videos per shard, shards named ``0000``, ``0001``, ... A video
  keeps the shard it was first put in (the assignment is kept with the shards), so adding videos only
  appends to the last shard or opens a new one: no published shard is rebuilt because another grew.
  A removed video leaves a gap that is not refilled.

Each shard is assembled, appended to, validated and published like the one dataset (defs/dataset.py).
LeRobot 0.6.1's ``lerobot-train`` takes one dataset: merge shards with ``lerobot-edit-dataset
--operation.type merge``, or load several with ``MultiLeRobotDataset`` in a training loop of one's own.
"""

from __future__ import annotations

from typing import Callable, Iterable

SHARD_WIDTH = 4  # 0000..9999 shards of N videos: 10,000 x N videos


def parse_shard(text: str) -> str:
    """The setting's value: "" (no shard), "source", or a positive integer (videos per shard), as text."""
    v = str(text).strip()
    if v in ("", "source"):
        return v
    try:
        n = int(v)
    except ValueError:
        raise ValueError('must be "" (one dataset), "source" or a positive number of videos per shard') from None
    if n < 1:
        raise ValueError("videos per shard must be >= 1")
    return str(n)



def assign(spec: str, keys: Iterable[str], source_of: Callable[[str], str],
           previous: dict[str, str] | None = None) -> dict[str, str]:
    """Each video's shard under ``spec`` (see :func:`parse_shard`; "" is not sharded). ``previous``: the
    assignment kept from earlier assemblies (videos of N-video shards stay where they were)."""
    keys = sorted(set(keys))
    if spec == "source":
        return {k: source_of(k) for k in keys}
    n = int(parse_shard(spec) or 0)
    if n < 1:
        raise ValueError("assign() needs a sharding: 'source' or N videos per shard")
    kept = {k: s for k, s in (previous or {}).items() if k in set(keys) and s.isdigit()}
    sizes: dict[int, int] = {}
    for s in kept.values():
        sizes[int(s)] = sizes.get(int(s), 0) + 1
    last = max(sizes, default=0)
    out = dict(kept)
    for k in keys:
        if k in out:
            continue
        if sizes.get(last, 0) >= n:
            last += 1
        sizes[last] = sizes.get(last, 0) + 1
        out[k] = f"{last:0{SHARD_WIDTH}d}"
    return out
