"""The Dagster UI, driven in a real browser as a user would (issues 8 and 18).

`make ui`'s launcher (python -m ego_assets.ui: `dagster dev` with the project's workspace.yaml and
dagster.yaml) runs on a throwaway home; Debian's Chromium, never a downloaded browser, is driven with
Playwright by role and text (the production bundle has no test ids). The user:

1. adds a new source: a folder with three short cuts of the bundled real clip (real hands) and one
   truncated file, then the sources file naming it; after that, no click starts anything;
2. opens the asset graph and sees every asset of the definitions, each with its group in the catalog,
   while the discovery sensor (running as shipped) registers one partition per video and requests one
   run per video;
3. watches the runs: three succeed, the truncated file's run fails alone; every per-video asset shows
   three partitions materialized and one failed; the failed partition and its failed check
   (`video_decodable`, with the reason) are shown per video; screenshots of both;
4. sees the dataset assembled by the `dataset_automation` sensor with no click, holding the episodes of
   the three good videos and none of the bad one.

Screenshots go to test-artifacts/ui/ with the server's log, whatever the outcome; the launcher is
stopped with SIGTERM and must take every process of the UI with it within seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from ego_assets_tests.e2e.ui_helpers import (ARTIFACTS, CHROMIUM, DagsterDev, asset_link_name,
                                             chromium_page, dismiss_welcome, free_port, poll, seen,
                                             shot)

pytestmark = [pytest.mark.ui, pytest.mark.timeout(900)]

SOURCE = "uitest"
N_GOOD = 3
CUT_S = 3.3            # three cuts of the bundled 9.9 s clip, 320 px wide: real hands, seconds per step
BAD_NAME = "zz truncated.mp4"
SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "sample_data", "egoloc_pour_water_rgb.mp4")
SERVER_START_S = 240   # ~10-30 s on an idle machine; minutes on a loaded 2-core box
DISCOVERY_S = 180      # sensor interval 15 s + daemon latency
RUN_S = 900            # four one-video runs, two at a time (process start, MediaPipe, every step)
DATASET_S = 400        # the automation sensor's tick (30 s) + the dataset run
STOP_S = 20            # SIGTERM to everything gone


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package; `make browser` installs it)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    srv = DagsterDev(home=tmp_path_factory.mktemp("ui") / "home", port=free_port(),
                     log_path=ARTIFACTS / "dagster_dev.log")
    srv.start()
    try:
        took = srv.wait_ready(SERVER_START_S)
        print(f"\ndagster dev answered after {took:.1f} s on {srv.url}")
        yield srv
    finally:
        srv.stop()
        log = srv.log_tail(10_000)
        print(f"make ui stopped {srv.stop_seconds:.1f} s after SIGTERM")
        assert srv.stop_seconds < STOP_S, f"SIGTERM took {srv.stop_seconds:.0f} s to stop the UI"
        assert not srv.group_alive()
        assert "will not be used" not in log  # no false warning about dagster.yaml


@pytest.fixture(scope="module")
def new_source(server, tmp_path_factory):
    """A new source, added as a user does: the videos first, then the sources file naming their folder
    (replaced in one rename, so the sensor never reads half a file). Returns the partition keys the
    discovery must register, computed with the library the sensor uses."""
    from ego_assets.lib.sources import Source, discover_file, list_files
    from ego_assets_tests.e2e.ui_helpers import cut_clip
    from ego_assets_tests.helpers import synth

    folder = tmp_path_factory.mktemp("videos") / "new camera"
    folder.mkdir()
    for i in range(N_GOOD):
        cut_clip(SAMPLE, folder / f"take {i}.mp4", i * CUT_S, CUT_S)
    truncated = synth.make_bad_files(tmp_path_factory.mktemp("bad"))["truncated"]
    shutil.copyfile(truncated, folder / BAD_NAME)
    src = Source(name=SOURCE, uri=str(folder))
    found = {discover_file(src, u).partition_key: u for u in list_files(src)}
    bad = [k for k, u in found.items() if u.endswith(BAD_NAME)]
    assert len(found) == N_GOOD + 1 and len(bad) == 1
    sources = server.home / "sources.yaml"
    tmp = sources.with_name("sources.yaml.tmp")
    tmp.write_text(f"sources:\n  - name: {SOURCE}\n    uri: {folder}\n    glob: \"*.mp4\"\n")
    os.replace(tmp, sources)
    return dict(folder=folder, keys=sorted(found), bad=bad[0], good=sorted(k for k in found if k != bad[0]),
                added_at=time.monotonic())


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # a loaded 2-core machine renders slowly
    with chromium_page() as pg:
        dismiss_welcome(pg)
        pg.goto(server.url + "/")
        yield pg


@pytest.fixture
def on_failure_screenshot(page, request):
    """A screenshot of the page where a test failed (its call is reported before this teardown)."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        shot(page, f"FAILED-{request.node.name}.png", full_page=True)


def _defs():
    from ego_assets.definitions import defs

    return defs


def _assets_and_groups() -> dict[str, str]:
    g = _defs().resolve_asset_graph()
    return {k.to_user_string(): g.get(k).group_name for k in g.get_all_asset_keys()
            if g.get(k).is_materializable}


def _per_video_assets() -> list[str]:
    from ego_assets.defs.execute import per_video_assets

    return per_video_assets(_defs())


def _nav(page, name: str) -> None:
    """Click an item of the left navigation (its accessible name is "<icon> <label>")."""
    page.get_by_role("navigation").get_by_role("link", name=re.compile(rf"(^|\s){name}$")).click()


def _open_asset(page, key: str, tab: str) -> None:
    from playwright.sync_api import expect

    _nav(page, "Catalog")
    page.get_by_role("link", name=asset_link_name(key)).first.click()
    page.get_by_role("tab", name=tab, exact=True).click()
    expect(page.get_by_role("tab", name=tab, exact=True)).to_have_attribute("aria-selected", "true")


def _holding(page, must: list, must_not: list = ()):
    """Elements holding every locator of ``must`` and none of ``must_not``: a row of the UI's
    virtualized lists, which have no row role."""
    loc = page.locator("div")
    for m in must:
        loc = loc.filter(has=m)
    for m in must_not:
        loc = loc.filter(has_not=m)
    return loc


def test_asset_graph_shows_every_asset_with_its_group(server, new_source, page,
                                                      on_failure_screenshot):
    # (new_source: the sensor discovers the new videos while the user looks at the graph)
    from playwright.sync_api import expect

    assets = _assets_and_groups()
    groups = sorted(set(assets.values()))
    assert assets, "the definitions have no assets"

    _nav(page, "Lineage")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    if len(groups) > 1:  # with several groups the graph starts collapsed to one box per group
        # the welcome modal can pop up and close the menu under the click: reopen it and retry
        for attempt in range(4):
            page.get_by_role("button", name="settings", exact=True).click()
            try:
                page.get_by_role("menuitem", name=re.compile("Expand all groups")).click(timeout=10_000)
                break
            except Exception:  # noqa: BLE001 - playwright's TimeoutError
                page.keyboard.press("Escape")
                if attempt == 3:
                    raise
        page.keyboard.press("Escape")
        for grp in groups:
            expect(page.get_by_text(grp, exact=True).first).to_be_visible()
    for key in assets:
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    page.wait_for_timeout(1500)  # let the graph finish its zoom-to-fit animation
    shot(page, "01_asset_graph.png")

    # the catalog lists every asset on its own row, with its group
    _nav(page, "Catalog")
    for key, grp in assets.items():
        others = [page.get_by_role("link", name=asset_link_name(o)) for o in assets if o != key]
        row = _holding(page, [page.get_by_role("link", name=asset_link_name(key)),
                              page.get_by_role("link", name=re.compile(rf"(^|\s){re.escape(grp)}$"))],
                       others)
        expect(row.first).to_be_visible()
    shot(page, "02_catalog_groups.png")


def _instance(server):
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    return DagsterInstance.from_ref(InstanceRef.from_dir(str(server.home / "dagster")))


def test_good_videos_reach_the_dataset_and_the_bad_one_fails_alone(server, new_source, page,
                                                                    on_failure_screenshot):
    import dagster as dg
    from playwright.sync_api import expect

    from ego_assets.defs.partitions import videos
    from ego_assets.lib import catalog
    from ego_assets.lib.storage import Store

    keys, bad, good = new_source["keys"], new_source["bad"], new_source["good"]
    per_video = _per_video_assets()
    store = Store(str(server.home))
    timings: dict[str, float] = {}

    # -- the sensor registers one partition per new video: the Partitions page lists them
    _open_asset(page, per_video[0], "Partitions")

    def listed():
        return all(seen(_key_text(page, k)) for k in keys)

    poll(page, listed, DISCOVERY_S, f"partitions {keys} on the Partitions page", refresh=page.reload)
    timings["discovered"] = time.monotonic() - new_source["added_at"]
    shot(page, "03_partitions_discovered.png")

    # -- one run per video, requested by the sensor: three succeed, the truncated file's fails alone
    _nav(page, "Runs")

    def runs_done():
        return (seen(page.get_by_role("link", name="discover_videos", exact=True))
                and seen(page.get_by_role("tab", name="Queued (0)"), 3000)
                and seen(page.get_by_role("tab", name="In progress (0)"), 3000)
                and len(_sensor_runs(server)) == len(keys))

    poll(page, runs_done, RUN_S, "the sensor's four runs to finish", refresh=page.reload)
    timings["runs_done"] = time.monotonic() - new_source["added_at"]
    runs = _sensor_runs(server)
    assert {r.tags.get("dagster/partition"): r.status.value for r in runs} == {
        k: "FAILURE" if k == bad else "SUCCESS" for k in keys}
    expect(page.get_by_text("Failure", exact=True).first).to_be_visible()
    shot(page, "04_runs_one_per_video.png")

    # -- every per-video asset: the good videos materialized, the bad one failed, nothing missing
    with _instance(server) as inst:
        for asset in per_video:
            st = inst.get_status_by_partition(dg.AssetKey(asset), keys, videos)
            assert {k: st[k].value for k in keys} == {
                k: "FAILED" if k == bad else "MATERIALIZED" for k in keys}, asset
    for asset in (per_video[0], per_video[-1]):
        _open_asset(page, asset, "Partitions")
        for status in (f"Materialized ({N_GOOD})", "Failed (1)", "Missing (0)"):
            expect(page.get_by_text(status, exact=True)).to_be_visible()

    # -- the failed partition, as the UI shows it (screenshot), and the reason in its run
    _open_asset(page, "source_videos", "Partitions")
    _key_text(page, bad).first.click()
    expect(page.get_by_text("Failed", exact=False).first).to_be_visible()
    page.wait_for_timeout(1500)
    shot(page, "05_failed_partition.png")

    # -- its failed check, per video: video_decodable failed on the bad video with the reason, and
    # passed on each good one (Dagster's check records, and the check's page in the UI)
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    with _instance(server) as inst:
        recs = inst.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("source_videos"), "video_decodable"), limit=20)
        by_pk = {r.partition: r for r in recs}
    assert set(by_pk) == set(keys)
    assert by_pk[bad].status == AssetCheckExecutionRecordStatus.FAILED
    reason = by_pk[bad].event.dagster_event.event_specific_data.metadata["reason"].value
    assert "truncated" in reason and BAD_NAME in reason, reason
    assert all(by_pk[k].status == AssetCheckExecutionRecordStatus.SUCCEEDED for k in good)
    _open_asset(page, "source_videos", "Checks")
    page.get_by_text("video_decodable", exact=True).first.click()
    poll(page, lambda: seen(page.get_by_text(re.compile("truncated")), 5000), 60,
         "the failed check's reason on its page", refresh=None)
    page.wait_for_timeout(1000)
    shot(page, "06_check_failed_with_reason.png", full_page=True)
    page.get_by_role("tab", name="Partitions", exact=True).last.click()  # the check's, per video
    for status in ("Failed (1)", f"Passed ({N_GOOD})"):  # one result per video
        expect(page.get_by_text(status, exact=True).first).to_be_visible()
    expect(_key_text(page, bad).first).to_be_visible()
    page.wait_for_timeout(1500)
    shot(page, "06b_check_per_video.png", full_page=True)

    # -- the dataset: assembled by the dataset automation sensor once the runs ended, with no click,
    # holding the three good videos' episodes
    def dataset_run():
        with _instance(server) as inst:
            ev = inst.get_latest_materialization_event(dg.AssetKey("lerobot_dataset"))
            if ev is None:
                return None
            run = inst.get_run_by_id(ev.run_id)
            return run if run.tags.get("dagster/sensor_name") == "dataset_automation" else None

    poll(page, lambda: dataset_run() is not None, DATASET_S, "the dataset automation to assemble the dataset")
    timings["in_dataset"] = time.monotonic() - new_source["added_at"]
    con = catalog.connect(store, in_memory=True)
    try:
        in_dataset = sorted(r[0] for r in con.execute(
            "select distinct partition_key from episodes").fetchall())
    finally:
        con.close()
    assert in_dataset == good
    _open_asset(page, "lerobot_dataset", "Overview")
    expect(page.get_by_role("link", name="dataset_automation").first).to_be_visible()
    shot(page, "07_dataset_by_automation.png")
    print("UI flow (s from adding the source): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))


def _key_text(page, key: str):
    """A partition key as the UI lists it: long keys are shortened in the middle ("abc…xyz")."""
    return page.get_by_text(re.compile(rf"^{re.escape(key[:12])}.*{re.escape(key[-8:])}$")).filter(visible=True)


def _sensor_runs(server) -> list:
    import dagster as dg

    with _instance(server) as inst:
        return [r for r in inst.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "discover_videos"}))
                if r.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)]
