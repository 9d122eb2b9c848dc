"""The DuckDB catalog (docs/architecture.md §5): one view per table of schemas.TABLES over the Parquet files.

``<home>/catalog.duckdb`` is for users and tools; it holds only view definitions. Writers never open it:
the views are globs, so a new partition's Parquet file is visible without touching the catalog, and the
file is only rewritten when a table first appears (``ensure_view``) or on ``refresh``. Checks and the CLI
may also use :func:`connect` with ``in_memory=True`` which defines the same views in a private
in-memory database and so never waits on a lock.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager

import duckdb

from ego_assets.lib import catalog_segments, schemas, settings
from ego_assets.lib.storage import Store

CATALOG_FILE = "catalog.duckdb"


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _select(store: Store, table: str, snap: catalog_segments.Snapshot, persistent: bool) -> str:
    """The view's SELECT over a snapshot: the segments (less their dead rows) and the files no segment
    holds. The sandbox reads the snapshot's exact files. A persistent view reads the segments of the
    last refresh and globs the table's files less those the segments hold (DuckDB skips those by name
    without opening them), so a file written since is visible at once; a file changed since shows its
    rows as of the last refresh until the next one. Paths are absolute (object stores: URLs, read
    through the filesystem registered on each connection); :func:`connect` re-roots a catalog whose
    home was moved."""
    def url(rel: str) -> str:
        return store.url(store.join(rel))

    src = catalog_segments.SOURCE_COLUMN
    parts = []
    for seg, dead in snap.segments.items():
        where = f" WHERE {src} NOT IN ({', '.join(map(_lit, dead))})" if dead else ""
        parts.append(f"SELECT * EXCLUDE ({src}) FROM read_parquet({_lit(url(seg))}){where}")
    if not persistent:
        if snap.fresh:
            files = ", ".join(_lit(url(f)) for f in snap.fresh)
            parts.append(f"SELECT * FROM read_parquet([{files}], union_by_name = true)")
        return " UNION ALL BY NAME ".join(parts)
    held = sorted(catalog_segments.held(store, table))
    glob = store.table_glob(table)[len(store.root) + 1:]
    where = f" WHERE filename NOT IN ({', '.join(_lit(url(h)) for h in held)})" if held else ""
    parts.append(f"SELECT * EXCLUDE (filename) FROM read_parquet({_lit(url(glob))}, union_by_name = true, "
                 f"filename = true){where}")
    return " UNION ALL BY NAME ".join(parts)


def _view_sql(store: Store, table: str, snap: catalog_segments.Snapshot, persistent: bool) -> str:
    return f"CREATE OR REPLACE VIEW {table} AS {_select(store, table, snap, persistent)}"


def _has_files(store: Store, table: str) -> bool:
    return bool(catalog_segments.listing(store, table))


def _register(con: duckdb.DuckDBPyConnection, store: Store) -> None:
    """Object stores: DuckDB reads the Parquet files through the store's own fsspec filesystem (same
    endpoint and credentials, no httpfs extension to download). Once per connection."""
    if not store.is_local and not con.filesystem_is_registered(store.protocol):
        con.register_filesystem(store.fs)


def _define(con: duckdb.DuckDBPyConnection, store: Store, table: str, persistent: bool) -> bool:
    """Define ``table`` as a view if it has files, else as an empty table of its schema."""
    _register(con, store)
    kind = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = ?", [table]).fetchone()
    snap = catalog_segments.snapshot(store, table)
    if snap.fresh or (snap.segments and _has_files(store, table)):
        if kind and kind[0] == "BASE TABLE":
            con.execute(f"DROP TABLE {table}")
        con.execute(_view_sql(store, table, snap, persistent))
        return True
    if kind is None:
        empty = schemas.empty(table)  # noqa: F841 (referenced by name in the SQL below)
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM empty")
    return False


@contextmanager
def _lock(store: Store):
    path = os.path.join(store.root, "catalog.lock")
    os.makedirs(store.root, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def catalog_path(store: Store) -> str:
    """The catalog file. On object stores it lives in a local folder (DuckDB files need a filesystem)."""
    if store.is_local:
        return os.path.join(store.root, CATALOG_FILE)
    base = settings.get("CATALOG_DIR") or os.path.expanduser("~/.cache/ego_assets")
    os.makedirs(base, exist_ok=True)
    return os.path.join(base, store.root.replace("/", "_") + "-" + CATALOG_FILE)


def _marker(store: Store, table: str) -> str:
    return os.path.join(os.path.dirname(catalog_path(store)), ".catalog", f"{table}.view")


def refresh(store: Store, tables: list[str] | None = None, compact: bool = True) -> dict[str, bool]:
    """(Re)define the views in ``<home>/catalog.duckdb``, first folding the files written since the last
    refresh into the tables' segments (``compact``). Returns table -> has data. Local homes: one refresh at
    a time (a file lock). Object stores: two refreshes at once cannot lose rows (a file folded by the one
    whose manifest is overwritten is read on its own until the next refresh folds it again) but leave
    an unreferenced segment behind; under Dagster the `catalog_views` step is the one refresher."""
    path = catalog_path(store)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    out = {}
    with _lock(store) if store.is_local else _nolock():
        if compact:
            _compact(store, tables)
        con = duckdb.connect(path)
        try:
            for t in tables or list(schemas.TABLES):
                out[t] = _define(con, store, t, persistent=True)
                if out[t]:
                    os.makedirs(os.path.dirname(_marker(store, t)), exist_ok=True)
                    open(_marker(store, t), "w").close()
        finally:
            con.close()
    return out


@contextmanager
def _nolock():
    yield


def _compact(store: Store, tables: list[str] | None) -> None:
    for t in tables or list(schemas.TABLES):
        catalog_segments.compact(store, t)


def fold(store: Store) -> bool:
    """The refresh's first half alone: fold the files written since the last refresh into the tables'
    segments, under the refresh's lock, so that a refresh starting meanwhile waits and then folds only
    what came after. Local homes only (an object store has no lock to order the two): False there."""
    if not store.is_local:
        return False
    with _lock(store):
        _compact(store, None)
    return True


def ensure_view(store: Store, table: str) -> None:
    """Called by writers after a commit: cheap unless this table has never had a view."""
    if os.path.exists(_marker(store, table)) and os.path.exists(catalog_path(store)):
        return
    refresh(store, [table], compact=False)


def connect(store: Store, in_memory: bool = False) -> duckdb.DuckDBPyConnection:
    """A read-only connection with every view defined. ``in_memory`` skips the catalog file."""
    if not in_memory:
        path = catalog_path(store)
        if not os.path.exists(path):
            refresh(store)
        try:
            con = duckdb.connect(path, read_only=True)
            _register(con, store)
                    # Views over tables that appeared since the file was written, and every view of a home
            # that was moved since (the views hold its old paths), are redefined in memory.
            # (the local lookup first: on object stores each glob is a LIST request)
            moved = any(store.url(store.root) not in sql for (sql,) in con.execute(
                "SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall())
            missing = moved or [t for t in schemas.TABLES if con.execute(
                "SELECT table_type FROM information_schema.tables WHERE table_name = ?",
                [t]).fetchone() != ("VIEW",) and _has_files(store, t)]
            if not missing:
                return con
            con.close()
        except duckdb.IOException:
            pass  # someone holds the file for writing: fall back to private views
    con = duckdb.connect(":memory:")
    for t in schemas.TABLES:
        _define(con, store, t, persistent=False)
    return con


class QueryRefused(ValueError):
    """A query the catalog command does not run (it only reads the catalog's tables)."""


ALLOWED_STATEMENTS = ("SELECT", "EXPLAIN")


def sandboxed(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory connection that can read the catalog's tables and nothing else.

    Each view reads the exact list of its table's Parquet files; DuckDB is then told that these files
    are the only ones it may touch (``allowed_paths`` with ``enable_external_access = false``: no other
    file, no ATTACH, no extension install or load, no network), and the configuration is locked so a
    query cannot undo that. Statements other than one SELECT are refused by :func:`query` before they
    run, so nothing (COPY ... TO, CREATE, SET) can write, even to the allowed files."""
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    _register(con, store)
    allowed: list[str] = []
    for t in schemas.TABLES:
        snap = catalog_segments.snapshot(store, t)
        if snap.files:
            con.execute(_view_sql(store, t, snap, persistent=False))
            allowed.extend(store.url(store.join(f)) for f in snap.files)
        else:
            empty = schemas.empty(t)  # noqa: F841 (referenced by name in the SQL below)
            con.execute(f"CREATE TABLE {t} AS SELECT * FROM empty")
    con.execute("SET python_enable_replacements = false")  # no Python variables as tables
    con.execute("SET allowed_paths = $1", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def check_query(sql: str) -> None:
    """Refuse anything but one SELECT (or EXPLAIN) statement, naming what was refused."""
    try:
        stmts = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryRefused(str(e).splitlines()[0]) from None
    kinds = [st.type.name for st in stmts]
    if len(kinds) != 1 or kinds[0] not in ALLOWED_STATEMENTS:
        got = ", ".join(kinds) or "nothing"
        raise QueryRefused(f"the catalog command runs one SELECT statement on the catalog's tables "
                           f"(got {got}); for anything else open the catalog with your own DuckDB client")


def query(store: Store, sql: str):
    """Run one read-only SELECT in the sandbox of :func:`sandboxed`; returns (column names, rows).
    Raises :class:`QueryRefused` for other statements and ``duckdb.Error`` for a bad query."""
    check_query(sql)
    con = sandboxed(store)
    try:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description] if cur.description else []
        return cols, cur.fetchall()
    finally:
        con.close()
