"""The SQLite event log of the embedded default (``dagster.yaml``), with one SQLAlchemy engine per database.

Dagster's ``SqliteEventLogStorage`` builds a new SQLAlchemy engine for every connection it opens: every
stored event (about 110 per one-video run), every dynamic-partition lookup and every ``has_table`` probe.
Building an engine (URL parsing, dialect set-up, the first connection's initialisation) cost more CPU than
the insert it served: py-spy on a 6-video ``ego-assets run`` put about 14 % of the process's samples in
``_connect``/``has_table``. This subclass keeps the engine of each database it opened (the index and the
runs being written; the least recently used ones are disposed of beyond :data:`MAX_ENGINES`), with a few
open connections each (:data:`POOL_SIZE`; Dagster opens a new SQLite connection for every event), and
remembers the index tables and asset-key columns it found (Dagster asks again on every asset check and
asset event). A new run's own database is set up as Dagster sets it up (its schema, WAL, stamped at
alembic's head), with alembic's head revision read once per process (:func:`_alembic_scripts`): Dagster reads
alembic's ~90 revision scripts twice per run, ~55 ms of CPU each time a run starts. A dynamic partition
found is taken as existing for :data:`PARTITION_SEEN_S` (Dagster asks twice for every output of every step,
~40 queries per one-video run), and the latest materialization of an asset partition that this process
stored is the answer for that long to the query for it (Dagster asks twice for every check result, the
target of the check: 40 queries per one-video run, ~60 ms).
``benchmarks/event_log.py`` measures Dagster's CPU per one-video run at 0.27-0.31x of Dagster's own class, in the
same process (0.64x with the engines kept but a new connection per use). The connections are otherwise
Dagster's: the same busy timeout, lock and schema initialisation (SQLite's file locks order several
processes' writes as before; a kept connection holds no lock between transactions), the same files under
``<instance root>/history/runs`` (homes made before keep their history), plus ``synchronous=NORMAL``
(:func:`_sync_normal`).

:class:`FileComputeLogManager`: Dagster's local compute logs, kept in their files only (the CLI's runs).

Only dagster is imported here: the webserver and the daemon load this module.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from functools import lru_cache

from dagster import DagsterEventType, Field, StringSource
from dagster._core.event_api import AssetRecordsFilter, EventLogRecord, EventRecordsResult
from dagster._core.storage.event_log.base import EventLogCursor
from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._core.storage.event_log.schema import SqlEventLogStorageMetadata
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.sql import get_alembic_config, safe_commit
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS, create_db_conn_string
from dagster._utils import ensure_file, touch_file
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

# Engines kept at once: the index, the runs this process writes (one per worker) and a few it reads
MAX_ENGINES = 16
POOL_SIZE = 2  # connections kept open per database
# How long a dynamic partition found stays known without asking the index again. Another process's
# deletion is seen this much later (this process's own at once): Dagster itself only checks existence
# as it builds a step's output context, so a run of a partition deleted meanwhile goes on for a step.
PARTITION_SEEN_S = 5.0
_clock = time.monotonic  # (the tests move it)


def _sync_normal(dbapi_conn, _record) -> None:
    """``synchronous=NORMAL`` on each connection: Dagster's SQLite event logs are in WAL mode, where
    SQLite's own advice is NORMAL (no corruption; a power cut, not a killed process, may lose the last
    events). FULL syncs the log on every event: ~2 ms of waiting per commit measured here."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class _Recent:
    """What this process found (or stored) lately: a value is known for :data:`PARTITION_SEEN_S` after it
    was put, then asked again (only recent ones are kept)."""

    def __init__(self, most: int = 10_000):
        self._items: dict = {}  # key -> (value, when put)
        self._most = most

    def get(self, key):
        item = self._items.get(key)
        return item[0] if item is not None and _clock() - item[1] < PARTITION_SEEN_S else None

    def put(self, key, value) -> None:
        now = _clock()
        self._items[key] = (value, now)
        if len(self._items) > self._most:
            self._items = {k: v for k, v in self._items.items() if now - v[1] < PARTITION_SEEN_S}

    def pop(self, key) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


@lru_cache(maxsize=1)
def _alembic_scripts():
    """Alembic's scripts of Dagster's SQLite event log (the revisions read once per process)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__))


class EventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` that reuses one engine per database (see the module doc). Without a
    ``base_dir`` it uses the instance's own default, ``<instance root>/history/runs`` (known when the
    instance registers its storages, before any event is read or written)."""

    def __init__(self, base_dir: str | None = None, inst_data=None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._tables: set[str] = set()  # index tables known to exist (has_table)
        self._key_columns: set[str] = set()  # asset key table columns known to exist
        self._partitions_seen = _Recent()  # (definition, key) -> True: found
        # (asset key, partition) -> the latest materialization this process stored; the event a thread is
        # storing, and its record once the index has its id, wait in _storing until committed
        self._materialized = _Recent()
        self._storing = threading.local()
        self._pid = os.getpid()
        # guards the engines (not Dagster's _db_lock: has_table runs inside a connection holding it)
        self._engines_lock = threading.RLock()
        self._deferred_inst_data = inst_data
        if base_dir is not None:
            super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def config_type(cls):
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # ty: ignore[invalid-method-override]
        return cls(config_value.get("base_dir"), inst_data=inst_data)

    @property
    def inst_data(self):
        return getattr(self, "_inst_data", self._deferred_inst_data)

    def register_instance(self, instance) -> None:
        if not hasattr(self, "_base_dir"):  # Dagster's default place: DagsterSqliteStorage's layout
            super().__init__(os.path.join(instance.root_directory, "history", "runs"),
                             inst_data=self._deferred_inst_data)
        super().register_instance(instance)

    def _engine(self, shard: str) -> Engine:
        """The shard's engine, made on first use (its database initialised as Dagster's ``_connect`` does)."""
        with self._engines_lock:
            if self._pid != os.getpid():  # a forked child: its parent's pooled connections are not its own
                for kept in self._engines.values():
                    kept.dispose(close=False)
                self._engines.clear()
                self._pid = os.getpid()
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            # a few open connections kept per database (SQLite's own file locks still order the
            # processes' writes; a kept connection holds no lock between transactions)
            engine = create_engine(create_db_conn_string(self._base_dir, shard), poolclass=QueuePool,
                                   pool_size=POOL_SIZE, max_overflow=8,
                                   connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
                                                 "check_same_thread": False})
            event.listen(engine, "connect", _sync_normal)
            self._engines[shard] = engine
            while len(self._engines) > MAX_ENGINES:
                self._engines.popitem(last=False)[1].dispose()
            return engine

    @contextlib.contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine, for_index_shard=shard == INDEX_SHARD_NAME)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def has_table(self, table_name: str) -> bool:
        """Whether the index has the table; a table found is remembered (Dagster asks on every asset
        check event; only ``wipe`` and ``upgrade`` change the schema, and they forget)."""
        if table_name in self._tables:
            return True
        engine = self._engine(INDEX_SHARD_NAME)  # as Dagster's: no _db_lock (it is called under it)
        with engine.connect() as conn:
            found = bool(engine.dialect.has_table(conn, table_name))
        if found:
            self._tables.add(table_name)
        return found

    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        """As Dagster's, a column found remembered (asked on every asset event, like ``has_table``)."""
        if column_name in self._key_columns:
            return True
        found = super()._has_asset_key_col_on_connection(conn, column_name)
        if found:
            self._key_columns.add(column_name)
        return found

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        """As Dagster's; a partition found is known for :data:`PARTITION_SEEN_S` (module doc)."""
        key = (partitions_def_name, partition_key)
        if self._partitions_seen.get(key):
            return True
        found = super().has_dynamic_partition(partitions_def_name, partition_key)
        if found:
            self._partitions_seen.put(key, True)
        else:
            self._partitions_seen.pop(key)
        return found

    def delete_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> None:
        self._partitions_seen.pop((partitions_def_name, partition_key))
        super().delete_dynamic_partition(partitions_def_name, partition_key)

    def store_event(self, event) -> None:
        self._storing.event, self._storing.done = event, None
        try:
            super().store_event(event)
            done = self._storing.done
        finally:
            self._storing.event = self._storing.done = None
        if done is not None:  # committed: the partition's latest materialization, as the index has it
            self._materialized.put(*done)

    def _store_asset_event(self, conn: Connection, event, event_id: int) -> None:
        super()._store_asset_event(conn, event, event_id)
        ev = event.dagster_event
        if (getattr(self._storing, "event", None) is event and ev is not None and ev.partition is not None
                and ev.event_type == DagsterEventType.ASSET_MATERIALIZATION):
            self._storing.done = ((ev.asset_key, ev.partition), EventLogRecord(storage_id=event_id, event_log_entry=event))

    def fetch_materializations(self, records_filter, limit: int, cursor: str | None = None,
                               ascending: bool = False) -> EventRecordsResult:
        """As Dagster's; the latest materialization of one asset partition (``limit=1``, nothing else
        asked), when this process stored it less than :data:`PARTITION_SEEN_S` ago, without a query: the
        target of each check result of the step that just materialized it (module doc)."""
        f = records_filter
        if (limit == 1 and cursor is None and not ascending and isinstance(f, AssetRecordsFilter)
                and f.asset_partitions is not None and len(f.asset_partitions) == 1
                and f.after_timestamp is None and f.before_timestamp is None and f.after_storage_id is None
                and f.before_storage_id is None and f.storage_ids is None):
            hit = self._materialized.get((f.asset_key, f.asset_partitions[0]))
            if hit is not None:
                cursor = EventLogCursor.from_storage_id(hit.storage_id).to_string()
                return EventRecordsResult([hit], cursor=cursor, has_more=True)  # (as Dagster's: one of 1)
        return super().fetch_materializations(records_filter, limit, cursor, ascending)

    def wipe_asset(self, asset_key) -> None:
        self._materialized.clear()
        super().wipe_asset(asset_key)

    def wipe_asset_partitions(self, asset_key, partition_keys) -> None:
        self._materialized.clear()
        super().wipe_asset_partitions(asset_key, partition_keys)

    def _initdb(self, engine: Engine, for_index_shard: bool = False) -> None:
        """A run's database as Dagster's ``_initdb`` makes it (the same schema, WAL, alembic's version
        table at head; an existing database is left as it is), with alembic's revisions read once per
        process. The index, and any failure (another process making the same database: Dagster's
        retries), go through Dagster's own."""
        if for_index_shard:
            return super()._initdb(engine, for_index_shard=True)
        from alembic.runtime.migration import MigrationContext

        try:
            with engine.connect() as conn:
                context = MigrationContext.configure(conn)
                if context.get_current_revision() is not None:
                    return
                SqlEventLogStorageMetadata.create_all(engine)
                conn.execute(text("PRAGMA journal_mode=WAL;"))
                context.stamp(_alembic_scripts(), "head")
                safe_commit(conn)
        except Exception:  # noqa: BLE001 - Dagster's own set-up, with its retries, says what is wrong
            super()._initdb(engine, for_index_shard=False)

    def _forget_engines(self) -> None:
        with self._engines_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()
            self._tables.clear()
            self._key_columns.clear()
            self._partitions_seen.clear()
            self._materialized.clear()

    def wipe(self) -> None:
        self._forget_engines()  # its run databases are deleted
        super().wipe()

    def delete_events(self, run_id: str) -> None:
        self._materialized.clear()
        super().delete_events(run_id)
        with self._engines_lock:
            engine = self._engines.pop(run_id, None)
        if engine is not None:
            engine.dispose()

    def upgrade(self) -> None:
        self._forget_engines()
        super().upgrade()

    def dispose(self) -> None:
        self._forget_engines()
        super().dispose()


class FileComputeLogManager(LocalComputeLogManager):
    """Dagster's local compute logs, the same files (the UI shows them), without their copy to the
    process's own terminal. Dagster's ``capture_logs`` sends each captured stream back to the terminal
    through a ``tail -F`` and a Python watcher process: four processes per run (~40 ms of CPU), and the
    steps' library messages (MediaPipe's, FFmpeg's) then interleave with ``ego-assets run``'s own lines and
    progress bar. The CLI's runs use this class (``defs.execute.open_instance``) unless
    ``EGO_ASSETS_SHOW_STEP_OUTPUT`` is set (``-v``); the UI's runs keep Dagster's."""

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # (Dagster's names its own class)
        return cls(inst_data=inst_data, **config_value)

    @contextlib.contextmanager
    def capture_logs(self, log_key):
        out = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        err = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        ensure_file(out)
        ensure_file(err)
        with redirect_to_file(sys.stdout, out), redirect_to_file(sys.stderr, err):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))  # as Dagster's: the capture is complete
