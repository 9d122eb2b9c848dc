"""The Dagster UI, driven in a real browser as a user would (issue 8, part 1).

`dagster dev` runs on a throwaway home with the project's workspace.yaml and dagster.yaml; Debian's
Chromium (never a downloaded browser) is driven with Playwright, by role and text (the production bundle
has no test ids). The flow:

1. the asset graph shows every asset of the definitions, and the catalog shows each with its group;
2. a new source (a folder of tiny synthetic videos) is written into the sources file; the discovery
   sensor, running as shipped, registers one partition per video (seen on the asset's Partitions page)
   and requests its run, which the user watches to the end on the Runs page; a partition's metadata
   shows the probed values;
3. the user backfills the new partitions from the UI (per_video_job > Materialize all > the partitions >
   Launch backfill). The sensor has already processed them, so this is the "run it again" a user does:
   the backfill must succeed, recompute nothing (the data versions stay the same) and re-evaluate every
   check, all green. Launching it while the sensor's run is still writing the same partitions would
   race two writers of one partition (see the report of issue 8), so the user waits for that run first.

Screenshots go to test-artifacts/ui/ (with the server's log), whatever the outcome.
"""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from ego_assets_tests.e2e.ui_helpers import (ARTIFACTS, CHROMIUM, DagsterDev, asset_link_name,
                                             chromium_page, dismiss_welcome, free_port, poll, shot)

pytestmark = [pytest.mark.ui, pytest.mark.timeout(900)]

SOURCE = "uitest"
N_VIDEOS = 3
SERVER_START_S = 240  # ~10-30 s on an idle laptop; minutes on a loaded 2-core CI box
DISCOVERY_S = 180     # sensor interval 15 s + daemon latency
RUN_S = 420           # one run of the per-video job on the tiny videos, queue included


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
        print(f"dagster dev answered after {took:.1f} s on {srv.url}")
        yield srv
    finally:
        srv.stop()
        left = srv.group_alive()
        assert not left, f"processes of the dagster dev group still alive after SIGKILL: {left}"


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


def _checks_by_asset() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ck in _defs().resolve_asset_graph().asset_check_keys:
        out.setdefault(ck.asset_key.to_user_string(), []).append(ck.name)
    return {a: sorted(c) for a, c in out.items()}


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


def _row(page, must: list, must_not: list):
    """The elements that hold every locator of ``must`` and none of ``must_not``: a table row of the
    virtualized tables, which have no row role."""
    loc = page.locator("div")
    for m in must:
        loc = loc.filter(has=m)
    for m in must_not:
        loc = loc.filter(has_not=m)
    return loc


def test_asset_graph_shows_every_asset_with_its_group(server, page, on_failure_screenshot):
    from playwright.sync_api import expect

    assets = _assets_and_groups()
    groups = sorted(set(assets.values()))
    assert assets, "the definitions have no assets"

    _nav(page, "Lineage")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    if len(groups) > 1:  # with several groups the graph starts collapsed to one box per group
        page.get_by_role("button", name="settings", exact=True).click()
        page.get_by_role("menuitem", name=re.compile("Expand all groups")).click()
        page.keyboard.press("Escape")
        for grp in groups:
            expect(page.get_by_text(grp, exact=True).first).to_be_visible()
    for key in assets:
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    page.wait_for_timeout(1500)  # let the graph finish its zoom-to-fit animation
    shot(page, "01_asset_graph.png")

    # the catalog lists every asset on its own row with its group
    _nav(page, "Catalog")
    for key, grp in assets.items():
        others = [k for k in assets if k != key]
        must_not = [page.get_by_role("link", name=asset_link_name(o)) for o in others]
        row = _row(page, [page.get_by_role("link", name=asset_link_name(key)),
                          page.get_by_role("link", name=re.compile(rf"(^|\s){re.escape(grp)}$"))],
                   must_not)
        expect(row.first).to_be_visible()
    shot(page, "02_catalog_groups.png")


def test_new_source_is_discovered_backfilled_from_the_ui_and_checked(server, page, tmp_path,
                                                                     on_failure_screenshot):
    from playwright.sync_api import expect

    from ego_assets.lib.sources import Source, discover_file, list_files
    from ego_assets.lib.storage import Store
    from ego_assets_tests.helpers import synth

    t_start = time.monotonic()
    timings: dict[str, float] = {}
    per_video = _per_video_assets()
    checks = _checks_by_asset()

    # -- a new source: a folder of tiny videos, then the sources file naming it (as a user edits it)
    folder = tmp_path / "new camera"
    folder.mkdir()
    for i in range(N_VIDEOS):
        synth.make_video(folder / f"take {i}.mp4", n_frames=12, fps=10, size=(160, 120), seed=60 + i)
    src = Source(name=SOURCE, uri=str(folder))
    keys = [discover_file(src, u).partition_key for u in list_files(src)]
    assert len(set(keys)) == N_VIDEOS
    sources = server.home / "sources.yaml"
    tmp = sources.with_suffix(".tmp")
    tmp.write_text(f"sources:\n  - name: {SOURCE}\n    uri: {folder}\n    glob: \"*.mp4\"\n")
    os.replace(tmp, sources)  # the sensor never reads a half-written file

    # -- the sensor registers one partition per video: the asset's Partitions page lists them
    _open_asset(page, per_video[0], "Partitions")

    def listed():
        return all(page.get_by_text(k, exact=True).first.is_visible() for k in keys)

    timings["discovered"] = poll(page, listed, DISCOVERY_S, f"partitions {keys} on the Partitions page",
                                 refresh=page.reload)
    shot(page, "03_partitions_discovered.png")

    # -- the sensor's run: the user watches it on the Runs page until nothing is queued or running
    _nav(page, "Runs")

    def sensor_run_done():
        return (page.get_by_role("link", name="discover_videos", exact=True).first.is_visible()
                and page.get_by_role("tab", name="Queued (0)").is_visible()
                and page.get_by_role("tab", name="In progress (0)").is_visible())

    timings["sensor_run"] = poll(page, sensor_run_done, RUN_S, "the sensor's run to finish",
                                 refresh=page.reload)
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text("Failure", exact=True)).to_have_count(0)

    for asset in per_video:
        _open_asset(page, asset, "Partitions")
        for status in (f"Materialized ({N_VIDEOS})", "Failed (0)", "Missing (0)"):
            expect(page.get_by_text(status, exact=True)).to_be_visible()

    # -- a partition's metadata: the probed values of its video (known: 12 frames of 160x120 at 10 fps)
    _open_asset(page, "source_videos", "Partitions")
    page.get_by_text(keys[0], exact=True).first.click()
    expect(page.get_by_text("Latest materialization")).to_be_visible()
    meta = page.get_by_role("table").first
    expect(meta).to_contain_text("160x120")
    expect(meta).to_contain_text("take 0.mp4")
    expect(page.get_by_role("cell", name="12", exact=True).first).to_be_visible()  # n_frames
    shot(page, "04_partition_metadata.png")

    store = Store(str(server.home))
    before = {(a, k): store.lineage(a, k) for a in per_video for k in keys}

    # -- the backfill of the new partitions, from the job's page
    _nav(page, "Jobs")
    page.get_by_role("link", name=re.compile(r"(^|\s)per_video_job(\s|$)")).first.click()
    page.get_by_role("button", name=re.compile(r"^(materialization )?Materialize all")).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"materialize {len(per_video)} assets")
    dialog.get_by_role("button", name="All", exact=True).click()
    expect(dialog).to_contain_text(f"{N_VIDEOS} partitions")
    dialog.get_by_role("button", name="Custom", exact=True).click()  # shows the selected keys
    for k in keys:
        expect(dialog.get_by_text(k, exact=True).first).to_be_visible()
    shot(page, "05_backfill_dialog.png")
    dialog.get_by_role("button", name="Launch backfill").click()
    expect(dialog).to_have_count(0)
    t_backfill = time.monotonic()

    _nav(page, "Runs")
    page.get_by_role("tab", name="Backfills").click()
    backfill = page.get_by_role("link", name=re.compile(r"^run_with_subruns ")).first
    poll(page, backfill.is_visible, 60, "the backfill on the Backfills tab", refresh=page.reload)
    backfill.click()
    done = page.get_by_role("row", name=re.compile(rf"per_video_job .*\b{N_VIDEOS} 0 {N_VIDEOS} 0$"))

    def backfill_succeeded():  # partitions targeted, in progress, succeeded, failed
        return done.is_visible() and page.get_by_text("Succeeded", exact=True).first.is_visible()

    poll(page, backfill_succeeded, RUN_S, "the backfill to succeed on every partition",
         refresh=page.reload)
    timings["backfill"] = time.monotonic() - t_backfill
    shot(page, "06_backfill_succeeded.png")

    # -- the checks of every per-video asset are green (re-evaluated by the backfill's run)
    for asset in per_video:
        names = checks.get(asset, [])
        if not names:
            continue
        _open_asset(page, asset, "Checks")
        for name in names:
            others = [page.get_by_text(o, exact=True) for o in names if o != name]
            ok = _row(page, [page.get_by_text(name, exact=True),
                             page.get_by_text("Succeeded", exact=True)], others)
            expect(ok.first).to_be_visible()
        expect(page.get_by_text("Failed", exact=True)).to_have_count(0)
        shot(page, f"07_checks_{asset}.png")

    _nav(page, "Lineage")
    page.wait_for_timeout(2000)
    shot(page, "08_asset_graph_materialized.png")

    # -- what the runs wrote: every video complete, and the backfill recomputed nothing
    for k in keys:
        f = store.read_table("frames", k).to_pydict()
        assert len(f["t_s"]) == 12 and all(b > a for a, b in zip(f["t_s"], f["t_s"][1:]))
        for a in per_video:
            rows = store.lineage(a, k)
            assert rows[-1]["status"] == "ok", (a, k, rows[-1])
            assert rows == before[(a, k)], f"the backfill recomputed {a} for {k}"
    timings["total"] = time.monotonic() - t_start
    print("UI flow timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
