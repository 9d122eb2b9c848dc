"""Discovery (issue 16): identity from the full content, the storage home never a source, changed camera
hints rerun the calibration, in the library and in the `discover_videos` sensor."""

import hashlib
import json

import dagster as dg
import pytest

from ego_assets.defs import sensors
from ego_assets.defs.settings import EgoStorage
from ego_assets.lib import sources
from ego_assets.lib.sources import Source, discover, save_sources
from ego_assets.lib.storage import Store
from ego_assets_tests.helpers import synth


def test_discover_never_takes_the_home_for_a_source(tmp_path):
    folder = tmp_path / "src"
    home = folder / ".ego_assets"
    folder.mkdir()
    synth.make_video(folder / "a.mp4", n_frames=6, seed=1)
    # what a run leaves in the home: clips, a proxy, a dataset video (all valid videos)
    for rel in ("artifacts/clips/src-x/clip_0000.mp4", "artifacts/frames/src-x/proxy.mp4",
                "datasets/ego_assets/videos/observation.images.ego/chunk-000/file-000.mp4"):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        synth.make_video(home / rel, n_frames=6, seed=hash(rel) % 100)
    src = Source(name="src", uri=str(folder))
    assert len(sources.list_files(src)) == 4  # what the second `ego-assets run .` registered
    assert sources.list_files(src, exclude=[str(home)]) == [str(folder / "a.mp4")]
    assert sources.contains_home(src, str(home)) and not sources.contains_home(
        Source(name="o", uri=str(tmp_path / "elsewhere")), str(home))
    new, _, _ = discover([src], {}, set(), 10, exclude=[str(home)])
    assert [d.name for d in new] == ["a.mp4"]


def test_changed_hints_are_reported_once_for_the_registered_video(tmp_path):
    synth.make_video(tmp_path / "a.mp4", n_frames=6, seed=1)
    src = Source(name="cam", uri=str(tmp_path))
    new, seen, _ = discover([src], {}, set(), 10)
    [d] = new
    assert not d.hints_changed and d.sha256 and d.partition_key.endswith(d.sha256[:32])
    known = {d.partition_key}
    assert discover([src], seen, known, 10)[0] == []  # nothing changed
    src.hfov_deg = 110.0
    new, seen, _ = discover([src], seen, known, 10)
    assert [(x.partition_key, x.hints_changed, x.hints) for x in new] == [
        (d.partition_key, True, {"hfov_deg": 110.0})]
    assert discover([src], seen, known, 10)[0] == []  # reported once


def _tick(instance, home, cursor=None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor,
                                  resources={"ego": EgoStorage(home=str(home))})
    r = sensors.discover_videos(ctx)
    return r, (r.cursor if isinstance(r, dg.SensorResult) else ctx.cursor)


@pytest.mark.slow
def test_sensor_updates_hints_and_requests_a_rerun_and_skips_the_home(tmp_path, monkeypatch):
    folder = tmp_path / "src"
    home = folder / ".ego_assets"  # the home inside the source folder
    folder.mkdir()
    synth.make_video(folder / "a.mp4", n_frames=6, seed=1)
    sources_file = tmp_path / "sources.yaml"
    monkeypatch.setenv("EGO_ASSETS_SOURCES", str(sources_file))
    save_sources(str(sources_file), [Source(name="cam", uri=str(folder))])
    store = Store(str(home))
    with dg.DagsterInstance.ephemeral() as instance:
        r, cur = _tick(instance, home)
        [key] = r.dynamic_partitions_requests[0].partition_keys
        instance.add_dynamic_partitions("videos", [key])
        assert store.video_record(key)["hints"] == {}
        # the pipeline writes videos into the home: never discovered
        (home / "artifacts" / "clips" / key).mkdir(parents=True)
        synth.make_video(home / "artifacts" / "clips" / key / "clip_0000.mp4", n_frames=6, seed=5)
        r, cur = _tick(instance, home, cur)
        assert isinstance(r, dg.SkipReason)
        save_sources(str(sources_file), [Source(name="cam", uri=str(folder), hfov_deg=110.0)])
        r, cur = _tick(instance, home, cur)
        assert [q.partition_key for q in r.run_requests] == [key]
        assert r.run_requests[0].run_key.startswith(f"{key}@hints-")
        assert list(r.dynamic_partitions_requests[0].partition_keys) == []  # not a new partition
        assert store.video_record(key)["hints"] == {"hfov_deg": 110.0}
        r, cur = _tick(instance, home, cur)
        assert isinstance(r, dg.SkipReason)
        assert all("|" in v for v in json.loads(cur)["seen"].values())


def test_hashing_stops_at_the_budget_and_resumes_next_call(tmp_path):
    for i in range(3):
        synth.make_video(tmp_path / f"v{i}.mp4", n_frames=6, seed=40 + i)
    src = Source(name="b", uri=str(tmp_path))
    new, seen, _ = discover([src], {}, set(), 10, budget_s=0.0)
    assert len(new) == 1 and len(seen) == 1  # the first file, then the budget was spent
    keys = {d.partition_key for d in new}
    more, seen, _ = discover([src], seen, keys, 10, budget_s=None)
    assert len(more) == 2 and len(seen) == 3 and not keys & {d.partition_key for d in more}


def test_symlinked_videos_are_found_and_broken_links_skipped_with_a_note(tmp_path, caplog):
    """Videos linked into a source folder are sources (the link's target is hashed and stamped); a
    broken link is skipped with a note naming it, the other files still come."""
    store_dir, folder = tmp_path / "videos", tmp_path / "src"
    store_dir.mkdir()
    folder.mkdir()
    synth.make_video(store_dir / "real.mp4", n_frames=6, seed=1)
    synth.make_video(folder / "plain.mp4", n_frames=6, seed=2)
    (folder / "linked.mp4").symlink_to(store_dir / "real.mp4")
    (folder / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    src = Source(name="src", uri=str(folder))
    skipped: list[str] = []
    infos = dict(sources.list_file_infos(src, skipped=skipped))
    assert sorted(infos) == [str(folder / "linked.mp4"), str(folder / "plain.mp4")]
    real = (store_dir / "real.mp4").stat()
    assert infos[str(folder / "linked.mp4")]["size"] == real.st_size  # the target's, not the link's
    assert infos[str(folder / "linked.mp4")]["mtime"] == real.st_mtime
    [note] = skipped
    assert "gone.mp4" in note and "broken symbolic link" in note and "deleted.mp4" in note
    new, seen, errors = discover([src], {}, set(), 10)
    assert sorted(d.name for d in new) == ["linked.mp4", "plain.mp4"]
    linked = next(d for d in new if d.name == "linked.mp4")
    assert linked.sha256 == hashlib.sha256((store_dir / "real.mp4").read_bytes()).hexdigest()
    assert "gone.mp4" in errors["src"] and any("gone.mp4" in r.message for r in caplog.records)
    assert discover([src], seen, {d.partition_key for d in new}, 10)[0] == []  # stamps stable
    # a source that is itself a link to one video
    one = Source(name="one", uri=str(folder / "linked.mp4"))
    assert sources.list_files(one) == [str(folder / "linked.mp4")]
