"""The embedded default's event log (ego_assets.defs.instance_storage): Dagster's SQLite files, read and
written the same way, with one engine per database."""

from pathlib import Path

import dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from ego_assets.defs.instance_storage import MAX_ENGINES, EventLogStorage

ROOT = Path(__file__).resolve().parents[2]
parts = dg.DynamicPartitionsDefinition(name="t_videos")


@dg.asset(partitions_def=parts, check_specs=[dg.AssetCheckSpec("ok", asset="first", blocking=True)])
def first(context):
    return dg.MaterializeResult(metadata={"pk": context.partition_key},
                                check_results=[dg.AssetCheckResult(check_name="ok", passed=True)])


@dg.asset(partitions_def=parts, deps=[first])
def second(context):
    return dg.MaterializeResult(metadata={"pk": context.partition_key})


job = dg.define_asset_job("t_job", selection=[first, second])
defs = dg.Definitions(assets=[first, second], jobs=[job])


def test_project_instance_uses_it_and_dagster_reads_the_same_files(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    run_ids = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, EventLogStorage)
        assert Path(storage._base_dir) == home / "history" / "runs"  # Dagster's default place
        for pk in [f"v{i}" for i in range(MAX_ENGINES + 3)]:
            instance.add_dynamic_partitions(parts.name, [pk])
            res = defs.resolve_job_def("t_job").execute_in_process(instance=instance, partition_key=pk)
            assert res.success
            run_ids.append(res.run_id)
        assert len(storage._engines) <= MAX_ENGINES  # the oldest runs' engines were let go
        ours = {r: [e.dagster_event_type for e in instance.all_logs(r)] for r in run_ids}
        mat = instance.fetch_materializations(dg.AssetKey("second"), limit=100).records
        assert sorted(m.partition_key for m in mat) == sorted(f"v{i}" for i in range(MAX_ENGINES + 3))
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("first"), "ok")])
        assert check  # the check evaluation is in the index too

    # Dagster's own class over the same folder sees exactly what was written: same files, same schema
    plain = SqliteEventLogStorage(str(home / "history" / "runs"))
    for r, types in ours.items():
        assert [e.dagster_event_type for e in plain.get_logs_for_run(r)] == types
        assert dg.DagsterEventType.ASSET_MATERIALIZATION in types and dg.DagsterEventType.RUN_SUCCESS in types


def _instance_home(tmp_path) -> Path:
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    return home


def _runs(home: str, pks: list[str]) -> list[str]:
    """Runs of ``t_job`` for ``pks`` on the instance at ``home`` (also the body of a second process)."""
    out = []
    with dg.DagsterInstance.from_config(home) as instance:
        for pk in pks:
            instance.add_dynamic_partitions(parts.name, [pk])
            res = defs.resolve_job_def("t_job").execute_in_process(instance=instance, partition_key=pk)
            assert res.success
            out.append(res.run_id)
    return out


def test_connections_are_kept_and_two_processes_write_one_instance(tmp_path):
    import multiprocessing as mp

    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    home = _instance_home(tmp_path)
    opened = []

    def count(dbapi_conn, record):  # the event log's files only (Dagster's run storage has its own)
        path = dbapi_conn.execute("PRAGMA database_list").fetchall()[0][2]
        if "/history/runs/" in path.replace("\\", "/"):
            opened.append(path)

    ctx = mp.get_context("spawn")
    event.listen(Pool, "connect", count)  # every new DB-API connection of any engine in this process
    try:
        with ctx.Pool(1) as pool:  # a second process writes the same files meanwhile
            other = pool.apply_async(_runs, (str(home), [f"p{i}" for i in range(3)]))
            mine = _runs(str(home), [f"m{i}" for i in range(3)])
            theirs = other.get(timeout=300)
    finally:
        event.remove(Pool, "connect", count)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        events = sum(len(instance.all_logs(r)) for r in mine)
        # a connection per event (Dagster's own class) would open at least one per stored event
        assert events > 30 and len(opened) < events / 3
        for r in mine + theirs:
            types = [e.dagster_event_type for e in instance.all_logs(r)]
            assert dg.DagsterEventType.RUN_SUCCESS in types and dg.DagsterEventType.ASSET_MATERIALIZATION in types
        mat = instance.fetch_materializations(dg.AssetKey("second"), limit=100).records
        assert sorted(m.partition_key for m in mat) == sorted([f"m{i}" for i in range(3)] + [f"p{i}" for i in range(3)])


def test_wipe_forgets_the_tables_and_engines(tmp_path):
    home = _instance_home(tmp_path)
    _runs(str(home), ["w0"])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        assert storage.has_table("asset_check_executions") and "asset_check_executions" in storage._tables
        assert not storage.has_table("no_such_table") and "no_such_table" not in storage._tables
        instance.wipe()  # the run databases are deleted: their engines go (the index's is made again)
        assert set(storage._engines) <= {"index"}
        assert storage.has_table("asset_check_executions")
        instance.add_dynamic_partitions(parts.name, ["w1"])
        assert defs.resolve_job_def("t_job").execute_in_process(instance=instance, partition_key="w1").success


def _schema(db: Path) -> dict:
    """A SQLite database's schema (tables and indexes, as SQL), journal mode and alembic revision."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return {"sql": sorted(r for r in con.execute("select type, name, sql from sqlite_master")),
                "journal": con.execute("pragma journal_mode").fetchone()[0],
                "revision": con.execute("select version_num from alembic_version").fetchall()}
    finally:
        con.close()


def test_a_run_database_is_made_as_dagster_makes_it(tmp_path):
    """A run's own database (set up without alembic's per-run script reading) has Dagster's schema, WAL and
    alembic's head revision, exactly as Dagster's class makes it; one that exists is left as it is."""
    from alembic.script import ScriptDirectory
    from dagster._core.storage.event_log.sqlite import sqlite_event_log
    from dagster._core.storage.sql import get_alembic_config

    ours, theirs = EventLogStorage(str(tmp_path / "ours")), SqliteEventLogStorage(str(tmp_path / "theirs"))
    for storage in (ours, theirs):
        with storage.run_connection("run-a"):
            pass
    a, b = _schema(tmp_path / "ours" / "run-a.db"), _schema(tmp_path / "theirs" / "run-a.db")
    head = ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__)).as_revision_number("head")
    assert a == b
    assert a["journal"] == "wal" and a["revision"] == [(head,)]
    assert any(name == "event_logs" for _, name, _ in a["sql"])

    # an existing run database (an older revision) is not stamped again, as with Dagster's
    import sqlite3

    con = sqlite3.connect(tmp_path / "theirs" / "run-a.db")
    con.execute("update alembic_version set version_num = 'older'")
    con.commit()
    con.close()
    again = EventLogStorage(str(tmp_path / "theirs"))
    with again.run_connection("run-a"):
        pass
    assert _schema(tmp_path / "theirs" / "run-a.db")["revision"] == [("older",)]
    ours.dispose()
    again.dispose()
    theirs.dispose()


def test_a_partition_found_is_known_for_a_while_and_a_deletion_is_seen(tmp_path, monkeypatch):
    """A dynamic partition found is not asked again for PARTITION_SEEN_S; this process's own deletion is
    seen at once, another's once that time has passed; a missing partition is asked every time."""
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    from ego_assets.defs import instance_storage

    asked = []
    real = SqlEventLogStorage.has_dynamic_partition
    monkeypatch.setattr(SqlEventLogStorage, "has_dynamic_partition",
                        lambda self, d, k: asked.append(k) or real(self, d, k))
    clock = [1000.0]
    monkeypatch.setattr(instance_storage, "_clock", lambda: clock[0])
    base = str(tmp_path / "runs")
    ours, other = EventLogStorage(base), EventLogStorage(base)  # two processes' storages on one instance
    assert not ours.has_dynamic_partition("videos", "a")
    other.add_dynamic_partitions("videos", ["a", "b"])
    assert ours.has_dynamic_partition("videos", "a")  # a missing one was not remembered
    n = len(asked)
    assert all(ours.has_dynamic_partition("videos", "a") for _ in range(40))
    assert len(asked) == n  # known: no query
    ours.has_dynamic_partition("videos", "b")
    ours.delete_dynamic_partition("videos", "b")
    assert not ours.has_dynamic_partition("videos", "b")  # its own deletion, at once
    other.delete_dynamic_partition("videos", "a")
    clock[0] += instance_storage.PARTITION_SEEN_S / 2
    assert ours.has_dynamic_partition("videos", "a")  # another's deletion: not yet
    clock[0] += instance_storage.PARTITION_SEEN_S
    assert not ours.has_dynamic_partition("videos", "a")
    ours.dispose()
    other.dispose()


@dg.asset
def talks():
    """A step whose libraries write: Python's print and a native library's write on file descriptor 2."""
    import os

    print("marker-on-stdout", flush=True)
    os.write(2, b"marker-on-fd-2\n")


_TALK = ("import os, sys, dagster as dg\n"
         "from ego_assets.defs.execute import open_instance\n"
         "from ego_assets_tests.defs.test_instance_storage import talks\n"
         "i = open_instance()\n"
         "print(type(i.compute_log_manager).__name__, file=sys.stderr)\n"
         "r = dg.materialize([talks], instance=i)\n"
         "print('run', r.run_id, r.success)\n")


def _talk(home: Path, **env) -> tuple[str, str, str]:
    """(the manager's class, the process's own stdout + stderr, the run's compute log files: none if it
    wrote none)."""
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _TALK], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "DAGSTER_HOME": str(home), **env})
    assert r.returncode == 0 and " True" in r.stdout, r.stderr[-3000:]
    run_id = r.stdout.split("run ")[1].split()[0]
    folder = home / "storage" / run_id / "compute_logs"
    logs = "".join(p.read_text() for p in folder.iterdir() if p.is_file()) if folder.is_dir() else ""
    return r.stderr.splitlines()[0], r.stdout + r.stderr, logs


def test_the_clis_runs_keep_the_steps_output_in_their_compute_logs_only(tmp_path):
    """The CLI's instance (execute.open_instance): the steps' stdout and stderr, Python's and a native
    library's, are in the run's compute log files (what the UI shows) and not on the process's own
    terminal; EGO_ASSETS_SHOW_STEP_OUTPUT (`ego-assets run -v`) keeps Dagster's own capture, which
    copies them there too; a dagster.yaml's own compute log manager is left as it is."""
    home = _instance_home(tmp_path)
    cls, printed, logs = _talk(home)
    assert cls == "FileComputeLogManager"
    assert "marker-on-stdout" in logs and "marker-on-fd-2" in logs
    assert "marker-on-" not in printed
    cls, _, logs = _talk(home, EGO_ASSETS_SHOW_STEP_OUTPUT="1")
    assert cls == "LocalComputeLogManager" and "marker-on-fd-2" in logs
    with open(home / "dagster.yaml", "a") as f:
        f.write("\ncompute_logs:\n  module: dagster._core.storage.noop_compute_log_manager\n"
                "  class: NoOpComputeLogManager\n")
    assert _talk(home)[0] == "NoOpComputeLogManager"



def test_a_checks_target_is_the_materialization_just_stored_without_a_query(tmp_path, monkeypatch):
    """The target of a check result (Dagster asks for the partition's latest materialization twice per
    result) is the materialization the step just stored, the one Dagster's own class finds in the files,
    with no query; another process's later materialization of the partition is the answer once
    PARTITION_SEEN_S has passed, and at once to any other query."""
    from dagster._core.event_api import AssetRecordsFilter
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    from ego_assets.defs import instance_storage

    home = _instance_home(tmp_path)
    asked = []
    real = SqlEventLogStorage.fetch_materializations
    monkeypatch.setattr(SqlEventLogStorage, "fetch_materializations",
                        lambda self, f, limit, cursor=None, ascending=False:
                        asked.append(f) or real(self, f, limit, cursor, ascending))
    clock = [1000.0]
    monkeypatch.setattr(instance_storage, "_clock", lambda: clock[0])
    run_id = _runs(str(home), ["v1"])[0]
    assert not asked  # both asks of the check's result answered without a query
    plain = SqliteEventLogStorage(str(home / "history" / "runs"))
    target = AssetRecordsFilter(dg.AssetKey("first"), asset_partitions=["v1"])
    stored = plain.fetch_materializations(target, limit=1).records[0]
    assert stored.run_id == run_id
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (ev,) = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        assert ev.event_log_entry.dagster_event.event_specific_data.target_materialization_data.storage_id == \
            stored.storage_id

    base = str(home / "history" / "runs")
    ours, other = EventLogStorage(base), EventLogStorage(base)  # two processes' storages on one instance
    with dg.DagsterInstance.from_config(str(home)) as instance:
        ours.register_instance(instance)
        other.register_instance(instance)
    for s in (ours, other):
        s.store_event(_materialization("v2", "r-ours" if s is ours else "r-other"))
        clock[0] += 1.0
    assert ours.fetch_materializations(AssetRecordsFilter(dg.AssetKey("first"), ["v2"]), limit=1).records[0].run_id == "r-ours"
    latest = ours.fetch_materializations(dg.AssetKey("first"), limit=1).records[0]  # another query: asked
    assert latest.run_id == "r-other"
    clock[0] += instance_storage.PARTITION_SEEN_S
    assert ours.fetch_materializations(AssetRecordsFilter(dg.AssetKey("first"), ["v2"]), limit=1).records[0].run_id == "r-other"
    ours.dispose()
    other.dispose()


def _materialization(pk: str, run_id: str):
    """A materialization event of ``first``'s partition ``pk`` as a run ``run_id`` stores it."""
    from dagster._core.events import DagsterEvent, StepMaterializationData
    from dagster._core.events.log import EventLogEntry

    ev = DagsterEvent(event_type_value=dg.DagsterEventType.ASSET_MATERIALIZATION.value, job_name="t_job",
                      event_specific_data=StepMaterializationData(dg.AssetMaterialization("first", partition=pk)))
    return EventLogEntry(error_info=None, level=20, user_message="", run_id=run_id, timestamp=1.0,
                         dagster_event=ev)
