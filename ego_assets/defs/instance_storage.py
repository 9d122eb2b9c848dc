"""The SQLite event log of the embedded default (``dagster.yaml``), with one SQLAlchemy engine per database.

Dagster's ``SqliteEventLogStorage`` builds a new SQLAlchemy engine for every connection it opens: every
stored event (about 110 per one-video run), every dynamic-partition lookup and every ``has_table`` probe.
Building an engine (URL parsing, dialect set-up, the first connection's initialisation) cost more CPU than
the insert it served: py-spy on a 6-video ``ego-assets run`` put about 14 % of the process's samples in
``_connect``/``has_table``. This subclass keeps the engine of each database it opened (the index and the
runs being written; the least recently used ones are disposed of beyond :data:`MAX_ENGINES`), with a few
open connections each (:data:`POOL_SIZE`; Dagster opens a new SQLite connection for every event), and
remembers the index tables it found (Dagster asks again on every asset check event).
``benchmarks/event_log.py`` measures Dagster's CPU per one-video run at 0.37x of Dagster's own class, in the
same process (0.64x with the engines kept but a new connection per use). The connections are otherwise
Dagster's: the same busy timeout, lock and schema initialisation (SQLite's file locks order several
processes' writes as before; a kept connection holds no lock between transactions), the same files under
``<instance root>/history/runs`` (homes made before keep their history), plus ``synchronous=NORMAL``
(:func:`_sync_normal`). Only dagster is imported here: the webserver and the daemon
load this module.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator

from dagster import Field, StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS, create_db_conn_string
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

# Engines kept at once: the index, the runs this process writes (one per worker) and a few it reads
MAX_ENGINES = 16
POOL_SIZE = 2  # connections kept open per database


def _sync_normal(dbapi_conn, _record) -> None:
    """``synchronous=NORMAL`` on each connection: Dagster's SQLite event logs are in WAL mode, where
    SQLite's own advice is NORMAL (no corruption; a power cut, not a killed process, may lose the last
    events). FULL syncs the log on every event: ~2 ms of waiting per commit measured here."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class EventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` that reuses one engine per database (see the module doc). Without a
    ``base_dir`` it uses the instance's own default, ``<instance root>/history/runs`` (known when the
    instance registers its storages, before any event is read or written)."""

    def __init__(self, base_dir: str | None = None, inst_data=None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._tables: set[str] = set()  # index tables known to exist (has_table)
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

    def _forget_engines(self) -> None:
        with self._engines_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()
            self._tables.clear()

    def wipe(self) -> None:
        self._forget_engines()  # its run databases are deleted
        super().wipe()

    def delete_events(self, run_id: str) -> None:
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
