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
