"""The Dagster instance on PostgreSQL (issue 7), as the Helm chart configures it for Kubernetes: a real
PostgreSQL server (Debian's `postgresql` package; `make postgres` installs it) started by the test on
127.0.0.1 and a free port, in a temporary folder, stopped at the end. A partitioned materialization
runs against it; runs, events, dynamic partitions and the `gpu` pool's slots live in that database."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ego_assets.defs.execute import materialize_videos, per_video_assets
from ego_assets.defs.partitions import videos
from ego_assets.lib.sources import Source
from ego_assets_tests.helpers import synth
from ego_assets_tests.helpers.homes import register_source

DB_USER, DB_NAME, DB_PASSWORD = "dagster", "dagster", "not-checked-trust-auth"
REPO = Path(__file__).resolve().parents[2]
# k8s/values.yaml names the driver (postgresql.postgresqlScheme): the locked SQLAlchemy 2.1 maps a bare
# postgresql:// URL to psycopg 3, which is not installed; dagster-postgres brings psycopg2.
SCHEME = yaml.safe_load((REPO / "k8s" / "values.yaml").read_text())["postgresql"]["postgresqlScheme"]


def _server_binaries() -> tuple[str, str] | None:
    """initdb and pg_ctl: on PATH, else where Debian puts them (/usr/lib/postgresql/<major>/bin)."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(f"{d}/initdb", os.X_OK) and os.access(f"{d}/pg_ctl", os.X_OK):
            return f"{d}/initdb", f"{d}/pg_ctl"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    bins = _server_binaries()
    if bins is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH nor under "
                    "/usr/lib/postgresql/*/bin: install Debian's `postgresql` package (`make postgres`)")
    initdb, pg_ctl = bins
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="ego_pg_"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the package's user
        import pwd

        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        runuser = shutil.which("runuser")
        as_user = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c"]
        os.chown(root, pg.pw_uid, pg.pw_gid)

    def run(*cmd: str, **kw):
        full = [*as_user, *cmd] if as_user[:1] != ["su"] else [*as_user, " ".join(cmd)]
        return subprocess.run(full, capture_output=True, text=True, timeout=120, **kw)

    data, log = root / "data", root / "server.log"
    r = run(initdb, "-D", str(data), "-U", DB_USER, "--auth=trust", "-E", "UTF8", "--no-sync")
    assert r.returncode == 0, r.stdout + r.stderr
    port = _free_port()
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    r = run(pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start")
    assert r.returncode == 0, r.stdout + r.stderr + (log.read_text() if log.exists() else "")
    try:
        import psycopg2

        for _ in range(50):  # `-w` waited for the server; the database may need a moment more
            try:
                psycopg2.connect(host="127.0.0.1", port=port, user=DB_USER, dbname="postgres").close()
                break
            except psycopg2.OperationalError:
                time.sleep(0.2)
        con = psycopg2.connect(host="127.0.0.1", port=port, user=DB_USER, dbname="postgres")
        con.autocommit = True
        con.cursor().execute(f"CREATE DATABASE {DB_NAME}")
        con.close()
        yield {"host": "127.0.0.1", "port": port}
    finally:
        run(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _instance_yaml(pg: dict) -> str:
    """The storage part of the dagster.yaml the official chart renders (configmap-instance.yaml,
    helpers/instance/_postgresql.tpl), the password read from DAGSTER_PG_PASSWORD as in the pods."""
    db = textwrap.indent(textwrap.dedent(f"""\
        postgres_db:
          username: {DB_USER}
          password:
            env: DAGSTER_PG_PASSWORD
          hostname: {pg['host']}
          db_name: {DB_NAME}
          port: {pg['port']}
          params: {{}}
          scheme: {SCHEME}
        """), " " * 4)
    parts = [f"{key}:\n  module: dagster_postgres.{mod}\n  class: {cls}\n  config:\n{db}"
             for key, mod, cls in (("run_storage", "run_storage", "PostgresRunStorage"),
                                   ("event_log_storage", "event_log", "PostgresEventLogStorage"),
                                   ("schedule_storage", "schedule_storage", "PostgresScheduleStorage"))]
    parts.append("concurrency:\n  pools:\n    default_limit: 2\n    granularity: op\n")
    parts.append("telemetry:\n  enabled: false\n")
    return "\n".join(parts)


def test_partitioned_materialization_on_postgres(postgres, tmp_path, monkeypatch):
    import psycopg2
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    home = tmp_path / "home"
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(_instance_yaml(postgres))
    monkeypatch.setenv("EGO_ASSETS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", DB_PASSWORD)
    folder = tmp_path / "videos"
    folder.mkdir()
    synth.make_video(folder / "pg.mp4", n_frames=16, fps=16, seed=7)
    src = Source(name="pg", uri=str(folder))
    store, found = register_source(home, src)
    keys = [d.partition_key for d in found]

    from ego_assets.definitions import defs

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        instance.add_dynamic_partitions(videos.name, keys)
        runs = []
        # a synthetic video shows no hands, so it has no dataset episodes: up to its captions
        graph = defs.resolve_asset_graph()
        assets = [a for a in per_video_assets(defs) if graph.get(dg.AssetKey(a)).group_name != "episodes"]
        status = materialize_videos(defs, instance, store, keys, on_run=lambda b, r: runs.append(r),
                                    assets=assets)
        assert [s.status for s in status.values()] == ["ok"], status
        assert len(runs) == 1 and runs[0].success
        for a in assets:
            assert set(instance.get_materialized_partitions(dg.AssetKey(a))) == set(keys), a
        # the pool size is instance state in the same database (what `dagster instance concurrency
        # set gpu N` changes on the cluster)
        instance.event_log_storage.set_concurrency_slots("gpu", 3)
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 3
    finally:
        instance.dispose()

    # another process (another pod) with the same configuration sees the same state
    other = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        record = other.get_run_record_by_id(runs[0].run_id)
        assert record is not None and record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert set(other.get_dynamic_partitions(videos.name)) == set(keys)
    finally:
        other.dispose()

    # and it is really in PostgreSQL
    con = psycopg2.connect(host=postgres["host"], port=postgres["port"], user=DB_USER, dbname=DB_NAME)
    try:
        cur = con.cursor()
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (runs[0].run_id,))
        assert cur.fetchall() == [("SUCCESS",)]
        cur.execute("SELECT DISTINCT asset_key FROM event_logs WHERE dagster_event_type = "
                    "'ASSET_MATERIALIZATION' AND partition = %s", (keys[0],))
        materialized = {row[0] for row in cur.fetchall()}
        assert materialized == {dg.AssetKey(a).to_string() for a in assets}
        cur.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s",
                    (videos.name,))
        assert [r[0] for r in cur.fetchall()] == keys
    finally:
        con.close()
