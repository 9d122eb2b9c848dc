import os
import signal
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from ego_assets.lib import catalog, schemas
from ego_assets.lib.storage import Store


def _frames_table(pk, n, offset=0.0):
    return schemas.conform("frames", {
        "frame_index": list(range(n)), "t_s": [offset + i / 10 for i in range(n)],
        "is_keyframe": [i == 0 for i in range(n)], "blur": [1.0] * n, "brightness": [0.5] * n,
        "motion": [0.0] * n}, pk)


def test_commit_replaces_partition_atomically(tmp_path):
    store = Store(str(tmp_path))
    with store.write_partition("frames", "v1") as w:
        w.write_table("frames", _frames_table("v1", 5))
        open(w.path("proxy.mp4"), "wb").write(b"old")
    assert store.read_table("frames", "v1").num_rows == 5
    with pytest.raises(RuntimeError):
        with store.write_partition("frames", "v1") as w:
            w.write_table("frames", _frames_table("v1", 9))
            raise RuntimeError("killed halfway")
    # the failed write left the committed partition as it was, and no staging behind
    assert store.read_table("frames", "v1").num_rows == 5
    assert not list((tmp_path / ".staging" / "frames").glob("*"))
    with store.write_partition("frames", "v1") as w:
        w.write_table("frames", _frames_table("v1", 7))
    assert store.read_table("frames", "v1").num_rows == 7
    assert sorted(os.listdir(store.artifact_dir("frames", "v1"))) == ["frames.parquet"]


def test_write_table_rejects_non_conforming(tmp_path):
    store = Store(str(tmp_path))
    with pytest.raises(Exception, match="schema"):
        with store.write_partition("frames", "v1") as w:
            w.write_table("frames", pa.table({"t_s": [0.0]}))
    with pytest.raises(ValueError, match="not in its schema"):
        schemas.conform("frames", {"bogus": [1]}, "v1")


def test_catalog_views_and_empty_tables(tmp_path):
    store = Store(str(tmp_path))
    # before anything exists, every table is queryable and empty
    assert catalog.query(store, "select count(*) from frames")[1] == [(0,)]
    assert catalog.query(store, "select count(*) from hand_tracks")[1] == [(0,)]
    for pk, n in (("a", 3), ("b", 4)):
        with store.write_partition("frames", pk) as w:
            w.write_table("frames", _frames_table(pk, n))
        catalog.ensure_view(store, "frames")
    cols, rows = catalog.query(store, "select partition_key, count(*) from frames group by 1 order by 1")
    assert rows == [("a", 3), ("b", 4)]
    # a new partition is visible through the existing view, without touching the catalog file
    mtime = os.path.getmtime(catalog.catalog_path(store))
    with store.write_partition("frames", "c") as w:
        w.write_table("frames", _frames_table("c", 2))
    catalog.ensure_view(store, "frames")
    assert os.path.getmtime(catalog.catalog_path(store)) == mtime
    assert catalog.query(store, "select count(*) from frames")[1] == [(9,)]
    # the in-memory variant sees the same
    con = catalog.connect(store, in_memory=True)
    assert con.execute("select count(*) from frames").fetchone() == (9,)


def test_lineage_and_quality_rows(tmp_path):
    store = Store(str(tmp_path))
    store.write_lineage(dict(partition_key="a", asset="frames", run_id="r1", code_version="1",
                             data_version="x", upstream="{}", params="{}", status="ok", error=None))
    store.write_lineage(dict(partition_key="a", asset="frames", run_id="r2", code_version="1",
                             data_version=None, upstream="{}", params="{}", status="failed",
                             error="boom"))
    assert [r["status"] for r in store.lineage("frames", "a")] == ["ok", "failed"]
    store.write_quality("frames", "a", [dict(asset="frames", check_name="c1", passed=False,
                                             severity="ERROR", value=1.0, detail="bad")])
    catalog.refresh(store)
    assert catalog.query(store, "select run_id, status from lineage order by run_id")[1] == [
        ("r1", "ok"), ("r2", "failed")]
    assert catalog.query(store, "select check_name, passed from quality")[1] == [("c1", False)]


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from ego_assets.lib.storage import Store
    from ego_assets.lib import schemas
    store = Store(sys.argv[1])
    with store.write_partition("frames", "v1") as w:
        w.write_table("frames", schemas.conform("frames", {"frame_index": [0, 1], "t_s": [0.0, 0.1]}, "v1"))
        open(w.path("proxy.mp4"), "wb").write(b"half")
        print("WRITING", flush=True)
        time.sleep(60)
""")


@pytest.mark.slow
def test_killed_writer_leaves_nothing_a_rerun_trips_over(tmp_path):
    store = Store(str(tmp_path))
    with store.write_partition("frames", "v1") as w:
        w.write_table("frames", _frames_table("v1", 5))
    p = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "WRITING"
    p.send_signal(signal.SIGKILL)
    p.wait()
    # readers still see the old committed partition only
    assert store.read_table("frames", "v1").num_rows == 5
    assert list((tmp_path / ".staging" / "frames").glob("v1.*"))  # the leftover exists...
    with store.write_partition("frames", "v1") as w:                # ...and the next writer removes it
        w.write_table("frames", _frames_table("v1", 6))
    assert not list((tmp_path / ".staging" / "frames").glob("v1.*"))
    assert store.read_table("frames", "v1").num_rows == 6


@pytest.mark.slow
def test_live_writers_staging_is_not_removed(tmp_path):
    """A second writer of the same partition must not delete a folder another live process is writing."""
    store = Store(str(tmp_path))
    p = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "WRITING"
        live = list((tmp_path / ".staging" / "frames").glob("v1.*"))
        assert len(live) == 1 and f".{p.pid}-" in live[0].name
        assert store.clean_stale("frames", "v1") == 0 and live[0].exists()
    finally:
        p.kill()
        p.wait()
    assert store.clean_stale("frames", "v1") == 1 and not live[0].exists()


def test_catalog_query_reads_the_tables_and_nothing_else(tmp_path):
    """Issue 16 item 2: `ego-assets catalog` overwrote committed data with COPY ... TO, created files
    with ATTACH, reached for the network with INSTALL and read /etc files with read_text."""
    from ego_assets import cli

    store = Store(str(tmp_path / "home"))
    with store.write_partition("frames", "v1") as w:
        w.write_table("frames", _frames_table("v1", 100))
    frames = store.table_path("frames", "v1")
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    sources = tmp_path / "home" / "sources.yaml"
    sources.write_text("sources: []\n")
    hostile = [
        f"copy (select 1 as bogus) to '{frames}' (format parquet)",
        f"copy (select 1 as bogus) to '{sources}' (format csv)",
        f"attach '{tmp_path / 'x.duckdb'}' (read_write)",
        "install httpfs", "load httpfs",
        f"select * from read_text('{secret}')",
        f"select * from read_text('{sources}')",
        f"select * from read_csv('{secret}')",
        "select * from glob('/etc/*')",
        "select 1; drop view frames",
        "set enable_external_access = true",
        "create table t as select 1",
    ]
    for sql in hostile:
        with pytest.raises(Exception) as e:
            catalog.query(store, sql)
        assert "s3cret" not in str(e.value)
        assert cli.main(["catalog", sql, "--home", str(store.root)]) == 1
    # nothing was written or created, the data is intact, the tables still read
    assert store.read_table("frames", "v1").num_rows == 100
    assert sources.read_text() == "sources: []\n"
    assert not (tmp_path / "x.duckdb").exists()
    assert catalog.query(store, "select count(*) from frames")[1] == [(100,)]
    assert catalog.query(store, "select count(*) from quality")[1] == [(0,)]
    assert catalog.query(store, "with a as (select max(t_s) m from frames) select round(m, 1) from a")[1] \
        == [(9.9,)]


def test_refresh_defines_every_view_for_a_users_own_client(tmp_path):
    import duckdb

    store = Store(str(tmp_path))
    with store.write_partition("frames", "v1") as w:
        w.write_table("frames", _frames_table("v1", 4))
    store.write_lineage(dict(partition_key="v1", asset="frames", run_id="r", code_version="1",
                             data_version="x", upstream="{}", params="{}", status="ok", error=None))
    store.write_quality("frames", "v1", [dict(asset="frames", check_name="c", passed=True,
                                              severity="ERROR", value=1.0, detail="")])
    catalog.refresh(store)
    con = duckdb.connect(catalog.catalog_path(store), read_only=True)
    try:
        views = {r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_type = 'VIEW'").fetchall()}
        assert {"frames", "lineage", "quality"} <= views
        assert con.execute("select count(*) from frames").fetchone() == (4,)
        assert con.execute("select status from lineage").fetchall() == [("ok",)]
        assert con.execute("select passed from quality").fetchall() == [(True,)]
        # every table is there (empty ones as empty tables of their schema)
        names = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
        assert set(schemas.TABLES) <= names
    finally:
        con.close()


def test_segments_keep_queries_exact_through_adds_replaces_and_deletes(tmp_path):
    """The catalog folds partition files into segments; queries stay exact at every step, and a
    home of many files keeps few segments (binary-counter merges)."""
    import duckdb

    from ego_assets.lib import catalog_segments

    store = Store(str(tmp_path))

    def put(pk, n, offset=0.0):
        with store.write_partition("frames", pk) as w:
            w.write_table("frames", _frames_table(pk, n, offset))

    def counts():
        return dict(catalog.query(store, "select partition_key, count(*) from frames group by 1")[1])

    expected = {}
    for i in range(12):
        put(f"p{i:02d}", i + 1)
        expected[f"p{i:02d}"] = i + 1
        catalog.refresh(store, ["frames"])
        assert counts() == expected
    man = catalog_segments.read_manifest(store, "frames")
    assert set(man["files"]) == {f"artifacts/frames/p{i:02d}/frames.parquet" for i in range(12)}
    assert 1 <= len(man["segments"]) <= 4  # log2(12) + 1
    # every query now reads segments, not the 12 files
    snap = catalog_segments.snapshot(store, "frames")
    assert snap.fresh == [] and len(snap.files) == len(man["segments"])
    # replaced and deleted since the last refresh: exact before the next refresh ...
    put("p03", 2, offset=100.0)
    expected["p03"] = 2
    store.delete_partition("frames", "p05")
    del expected["p05"]
    put("new", 5)
    expected["new"] = 5
    assert counts() == expected
    assert catalog.query(store, "select max(t_s) from frames where partition_key = 'p03'")[1] == [(100.1,)]
    # ... and after it; the user's own client sees the same through the persistent views
    catalog.refresh(store, ["frames"])
    assert counts() == expected
    assert catalog_segments.snapshot(store, "frames").fresh == []
    put("later", 3)  # written after the refresh: visible through the persistent view at once
    expected["later"] = 3
    con = duckdb.connect(catalog.catalog_path(store), read_only=True)
    try:
        assert dict(con.execute("select partition_key, count(*) from frames group by 1").fetchall()) == expected
    finally:
        con.close()
    assert counts() == expected
    # the home moved: connect() re-roots the views (they hold the old paths)
    import shutil

    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.move(str(tmp_path), str(moved))
    con = catalog.connect(Store(str(moved)))
    try:
        assert dict(con.execute("select partition_key, count(*) from frames group by 1").fetchall()) == expected
    finally:
        con.close()


def _fold_in_child(root: str, started: str) -> None:
    """A second process's fold (the CLI's worker's), holding the catalog's lock a while after it folded
    the frames table (``started`` says when)."""
    import time

    from ego_assets.lib import catalog_segments

    real = catalog_segments.compact

    def slow(store, table):
        out = real(store, table)
        if table == "frames":  # folded: hold the lock a while longer, then say until when
            open(started, "w").close()
            time.sleep(0.5)
            with open(started + ".held", "w") as f:
                f.write(repr(time.time()))
        return out

    catalog_segments.compact = slow
    assert catalog.fold(Store(root))


def test_a_fold_beside_a_refresh_leaves_the_refresh_only_what_came_after(tmp_path):
    """`fold` (a CLI worker's, while the dataset's run goes on) folds every file written so far under the
    refresh's lock: a refresh started meanwhile waits for it, then folds only the rows written since, and
    the views are exactly what a refresh alone gives."""
    import multiprocessing as mp
    import time

    from ego_assets.lib import catalog_segments

    store = Store(str(tmp_path))
    for i in range(4):
        with store.write_partition("frames", f"v{i}") as w:
            w.write_table("frames", _frames_table(f"v{i}", i + 2))
    started = str(tmp_path / "fold-started")
    child = mp.get_context("spawn").Process(target=_fold_in_child, args=(str(tmp_path), started))
    child.start()
    deadline = time.time() + 120
    while not os.path.exists(started) and child.is_alive() and time.time() < deadline:
        time.sleep(0.01)
    assert os.path.exists(started), "the other process's fold did not start"
    with store.write_partition("frames", "late") as w:  # the dataset's own rows, written meanwhile
        w.write_table("frames", _frames_table("late", 3))
    read, first = [], []
    real = catalog_segments.compact

    def counted(s, table):
        first.append(time.time())
        read.append(r := real(s, table))
        return r

    catalog_segments.compact = counted
    try:
        catalog.refresh(store)
    finally:
        catalog_segments.compact = real
    child.join(30)
    assert child.exitcode == 0
    with open(started + ".held") as f:
        held_until = float(f.read())
    assert first[0] >= held_until  # the refresh folded nothing before the other's lock was let go
    frames_read = [r["read"] for r, table in zip(read, schemas.TABLES) if table == "frames"]
    assert frames_read == [1]  # only the late file: the four before were folded by the other process
    assert dict(catalog.query(store, "select partition_key, count(*) from frames group by 1")[1]) == {
        "v0": 2, "v1": 3, "v2": 4, "v3": 5, "late": 3}
    assert catalog_segments.snapshot(store, "frames").fresh == []


def test_lineage_names_sort_as_the_attempts_were_made_across_a_seconds_turn():
    """The lineage's last row is the latest attempt: the file names must sort in time order, also for
    attempts a few microseconds apart at a second's turn (the seconds and the fraction read apart, or a
    fraction rounded up to 1.000000, once put such an attempt before the second it followed)."""
    from ego_assets.lib.storage import lineage_stamp

    base = 1_700_000_000  # 2023-11-14 22:13:20 UTC
    times = [base + 0.5, base + 0.999998, base + 0.999999, base + 1.0, base + 1.000001, base + 1.25]
    stamps = [lineage_stamp(t) for t in times]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stamps[0] == "20231114T221320.500000" and stamps[3] == "20231114T221321.000000"
    # a fraction that rounds up to the next second goes to the next second, not to the start of its own
    assert lineage_stamp(base + 0.9999996) == "20231114T221321.000000" > stamps[2]
