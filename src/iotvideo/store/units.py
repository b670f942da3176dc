"""Units of work: every domain read or write is ONE sync function run on one connection.

    total = await store.read(lambda c: c.execute(COUNT, {"t": tenant_id}).scalar_one())
    await store.write(lambda c: c.execute(insert(t).values(...)))

``fn(conn: sqlalchemy.engine.Connection) -> T`` does all the statements of the unit;
the store runs it as one transaction and hands back what it returned (or raises what it
raised, after rolling back). Functions must not keep the connection.

SQLite (the embedded default), on a sync ``sqlite://`` engine (pysqlite, WAL):

* reads run inline on the calling (event-loop) thread, on a connection of their own, in
  a deferred ``BEGIN`` … ``ROLLBACK`` (one snapshot for the whole unit). They are small
  indexed reads: a thread hop costs more than the query (docs/benchmarks.md). WAL
  readers never wait for the writer.
* writes run in ONE dedicated writer thread, each in ``BEGIN IMMEDIATE`` … ``COMMIT``: the
  store's writes are serialised, so a unit's reads and its writes see one state and
  check-then-write races between units cannot happen. Another process (or the
  aiosqlite engine, ``Store.engine``) writing the same file waits on SQLite's lock
  (``busy_timeout`` 30 s).

PostgreSQL, on the async engine (asyncpg), the unit running in SQLAlchemy's greenlet
bridge as ``AsyncConnection.run_sync`` would run it:

* reads in ``AUTOCOMMIT`` (no BEGIN/ROLLBACK round trips; READ COMMITTED gives each
  statement its own snapshot anyway); a read that fails because the server dropped the
  connection is retried once on a fresh one;
* writes in one transaction (``engine.begin()``); row locks are the domain's business
  (``SELECT … FOR UPDATE``/``FOR SHARE``); they are never retried here;
* no pre-ping on checkout (``pool_recycle`` instead), a pool sized for ≈ 32 requests in
  flight.

``Store.engine`` is an ``AsyncEngine`` on the same database (aiosqlite for SQLite, the
same asyncpg engine for PostgreSQL), for migrations and for code not yet written as
units of work.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam, event, select, true
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.util import await_, greenlet_spawn

T = TypeVar("T")
Unit = Callable[[Connection], T]

SQLITE_BUSY_TIMEOUT_S = 30
# PostgreSQL pools, per node: reads (AUTOCOMMIT) sized for ≈ 32 requests in flight;
# writes (and Store.engine's other users) for fewer. Connections open only on demand.
PG_READ_POOL = (32, 16)  # pool_size, max_overflow
PG_WRITE_POOL = (16, 16)
PG_POOL_RECYCLE_S = 1800


def sqlite_pragmas(dbapi_conn: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cur.close()


def create_async(url: str) -> AsyncEngine:
    """The async engine of ``url``: aiosqlite with the pragmas, or asyncpg with the pool
    settings above."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            sqlite_pragmas(dbapi_conn)

        return engine
    return _pg_engine(url, PG_WRITE_POOL)


def _pg_engine(url: str, pool: tuple[int, int], **kw: Any) -> AsyncEngine:
    return create_async_engine(url, pool_size=pool[0], max_overflow=pool[1], pool_pre_ping=False,
                               pool_recycle=PG_POOL_RECYCLE_S, **kw)


def _sync_sqlite_url(url: str) -> str:
    """``sqlite+aiosqlite:///path`` -> ``sqlite:///path`` (pysqlite)."""
    scheme, sep, rest = url.partition("://")
    return "sqlite" + sep + rest if scheme.startswith("sqlite") else url


class Store:
    """Runs units of work (see the module docstring). Make one per process with
    :meth:`open`; :meth:`close` it at the end."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect: str = engine.dialect.name

    @staticmethod
    def open(url: str) -> "Store":
        engine = create_async(url)
        if engine.dialect.name == "sqlite":
            return SqliteStore(engine, _sync_sqlite_url(url))
        return PgStore(engine, _pg_engine(url, PG_READ_POOL, isolation_level="AUTOCOMMIT"))

    async def read(self, fn: Unit[T]) -> T:
        raise NotImplementedError

    async def write(self, fn: Unit[T]) -> T:
        raise NotImplementedError

    async def close(self) -> None:
        await self.engine.dispose()


class SqliteStore(Store):
    def __init__(self, engine: AsyncEngine, sync_url: str) -> None:
        super().__init__(engine)
        # NullPool: the store keeps its connections itself (one per reading thread, one
        # for the writer), so there is no pool checkout per unit.
        self.sync: Engine = create_sync_engine(
            sync_url, poolclass=NullPool,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})

        @event.listens_for(self.sync, "connect")
        def _connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            # The store says BEGIN/COMMIT itself: no implicit BEGIN from the driver.
            dbapi_conn.isolation_level = None
            sqlite_pragmas(dbapi_conn)

        self._local = threading.local()
        self._conns: list[Connection] = []
        self._lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iotvideo-sqlite-writer")
        self._closed = False

    def _conn(self) -> Connection:
        """This thread's connection (the loop thread reads on one, the writer writes on one)."""
        c: Connection | None = getattr(self._local, "conn", None)
        if c is None or c.invalidated or c.closed:
            if self._closed:
                raise RuntimeError("the store is closed")
            c = self.sync.connect()
            self._local.conn = c
            with self._lock:
                self._conns.append(c)
        return c

    def _unit(self, fn: Unit[T], begin: str, commit: bool) -> T:
        c = self._conn()
        raw = c.connection.driver_connection
        assert raw is not None
        raw.execute(begin)
        try:
            result = fn(c)
        except BaseException:
            _end(c, raw, commit=False)
            raise
        _end(c, raw, commit=commit)
        return result

    async def read(self, fn: Unit[T]) -> T:
        return self._unit(fn, "BEGIN", commit=False)

    async def write(self, fn: Unit[T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._unit, fn, "BEGIN IMMEDIATE", True)

    async def close(self) -> None:
        self._closed = True
        loop = asyncio.get_running_loop()
        # Let queued writes finish, then close every connection (from this thread: the
        # store's connections are not bound to their threads).
        await loop.run_in_executor(None, self._writer.shutdown, True)
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except Exception:
                pass
        self.sync.dispose()
        await super().close()


def _end(c: Connection, raw: Any, commit: bool) -> None:
    """Ends the unit's transaction, both SQLAlchemy's view of it and the driver's (a unit
    that ran no statement leaves SQLAlchemy without one, but BEGIN was said)."""
    if commit:
        try:
            c.commit()
            if raw.in_transaction:
                raw.commit()
        except BaseException:
            _end(c, raw, commit=False)
            raise
    else:
        try:
            c.rollback()
        finally:
            if raw.in_transaction:
                raw.rollback()


class Disconnected(Exception):
    """The database connection broke under a :class:`Query` (it has been invalidated)."""


class PgStore(Store):
    def __init__(self, engine: AsyncEngine, read_engine: AsyncEngine) -> None:
        super().__init__(engine)
        # Its own pool, every connection in AUTOCOMMIT from the start: no isolation
        # level to set and reset per checkout.
        self._ro = read_engine
        self._renewed = 0.0
        # Read connections stay checked out of that pool and are kept here between units
        # (an AUTOCOMMIT connection has no state to reset): a unit takes one off this
        # list instead of a pool checkout + Connection + checkin + reset (≈ 40 µs).
        self._idle: list[Connection] = []
        self._open = 0
        self._max_open = PG_READ_POOL[0]
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._closed = False

    async def read(self, fn: Unit[T]) -> T:
        started = time.monotonic()
        try:
            return await self._read(fn)
        except DBAPIError as e:
            if not e.connection_invalidated:
                raise
            # SQLAlchemy saw the disconnect and dropped the pool's older connections.
            await self._drop_idle()
        except Disconnected:
            # A Query saw it, past SQLAlchemy: the pool's other connections are likely
            # dead too (server restart, failover), so start a new pool, unless that was
            # done since this unit started (concurrent units see the same outage).
            if self._renewed < started:
                self._renewed = time.monotonic()
                await self._drop_idle()
                await self._ro.dispose()
        # The server closed the connection (restart, idle timeout, failover): once more
        # on a fresh one.
        return await self._read(fn)

    async def _read(self, fn: Unit[T]) -> T:
        c = await self._checkout()
        try:
            result: T = await greenlet_spawn(_run_on, c, fn)
        except BaseException:
            await self._checkin(c, broken=c.invalidated or c.closed)
            raise
        await self._checkin(c, broken=False)
        return result

    async def _checkout(self) -> Connection:
        while True:
            if self._closed:
                raise RuntimeError("the store is closed")
            if self._idle:
                return self._idle.pop()
            if self._open < self._max_open:
                self._open += 1
                try:
                    return await greenlet_spawn(self._ro.sync_engine.connect)  # type: ignore[no-any-return]
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            fut: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                c = await fut
            except BaseException:
                if fut.done() and not fut.cancelled() and fut.result() is not None:
                    self._idle.append(fut.result())  # handed over as we were cancelled: pass it on
                    self._wake()
                raise
            if c is not None:
                return c

    async def _checkin(self, c: Connection, broken: bool) -> None:
        if broken or self._closed or c.invalidated or c.closed:
            self._open -= 1
            await _close_quietly(c)
            self._wake()
            return
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(c)
                return
        self._idle.append(c)

    def _wake(self) -> None:
        """A connection slot came free: the first waiter tries again (opens one)."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for c in idle:
            await _close_quietly(c)
        for _ in idle:
            self._wake()

    async def write(self, fn: Unit[T]) -> T:
        return await greenlet_spawn(_run_write, self.engine.sync_engine, fn)  # type: ignore[no-any-return]

    async def close(self) -> None:
        self._closed = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        await self._drop_idle()
        await self._ro.dispose()
        await super().close()


async def _close_quietly(c: Connection) -> None:
    """Gives a kept read connection back (closed if it is broken); never raises."""
    try:
        await greenlet_spawn(c.close)
    except Exception:
        pass


def round_trips(c: Connection) -> bool:
    """Whether each statement costs a network round trip (PostgreSQL), so that joining
    two into one pays; on SQLite a statement is a function call, and two simple ones
    beat their join (whose outer ORDER BY sorts)."""
    return c.dialect.name != "sqlite"


def head_and_page(head: Select[Any], columns: Sequence[Any], where: Sequence[Any], order_by: Sequence[Any]) -> Select[Any]:
    """ONE statement for a listing: the row of ``head`` (a count, or a parent row's
    counters; at most one row) LEFT JOINed with the page (``columns`` of the rows that
    match ``where``, in ``order_by`` order, bind parameters ``offset`` and ``limit``).
    Rows: (*head columns, *columns), in page order; a page past the end gives one row
    with NULLs for ``columns``; no head row gives no rows. Saves a round trip per page
    (PostgreSQL) and a statement (SQLite)."""
    h = head.subquery("h")
    p = (select(*columns, *(c.label(f"order_{i}") for i, c in enumerate(order_by))).where(*where)
         .order_by(*order_by).offset(bindparam("offset")).limit(bindparam("limit")).subquery("p"))
    pc = list(p.c)
    return (select(*h.c, *pc[:len(columns)]).select_from(h.outerjoin(p, true()))
            .order_by(*pc[len(columns):]))


def _run_on(c: Connection, fn: Unit[T]) -> T:
    """A read unit on a kept AUTOCOMMIT connection; what SQLAlchemy began (it autobegins
    on ``execute``; nothing at the server in AUTOCOMMIT) is ended, as a checkin would."""
    try:
        return fn(c)
    finally:
        if c.in_transaction():
            c.rollback()


def _run_write(engine: Engine, fn: Unit[T]) -> T:
    with engine.begin() as c:
        return fn(c)


class Query:
    """A SELECT built once, for the hot read paths: run on the driver itself, without
    SQLAlchemy's execution layer (≈ 15 µs per statement on SQLite, ≈ 50 µs through
    asyncpg's adapter), compiled once per dialect. Rows are plain tuples (asyncpg:
    Records): read them by position, in the order of the statement's columns; no
    result type processing (SQLite gives 0/1 for booleans).

    Straight to the driver where the unit's transaction allows it: always on SQLite
    (the store said BEGIN itself); on PostgreSQL in read units (AUTOCOMMIT). In a
    PostgreSQL write unit it goes through ``Connection.execute``, which starts the
    transaction (and takes any row lock) as usual.

    Not for statements with expanding parameters (``in_()`` of a list)."""

    __slots__ = ("stmt", "_compiled")

    def __init__(self, stmt: Any) -> None:
        self.stmt = stmt
        self._compiled: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {}

    def _sql(self, c: Connection) -> tuple[str, tuple[tuple[str, Any], ...]]:
        name = c.dialect.name
        hit = self._compiled.get(name)
        if hit is None:
            compiled = self.stmt.compile(dialect=c.dialect)
            sql = str(compiled)
            if "POSTCOMPILE" in sql or compiled.positiontup is None:
                raise ValueError(f"not a statement for Query: {sql}")
            defaults = compiled.params  # values bound in the statement itself
            hit = self._compiled[name] = (sql, tuple((n, defaults.get(n)) for n in compiled.positiontup))
        return hit

    def all(self, c: Connection, params: dict[str, Any]) -> Sequence[Any]:
        sql, names = self._sql(c)
        args = [params[n] if n in params else default for n, default in names]
        conn = c.connection
        if c.dialect.name == "sqlite":
            return conn.driver_connection.execute(sql, args).fetchall()  # type: ignore[union-attr]
        if conn.dbapi_connection.autocommit:  # type: ignore[union-attr]
            raw = conn.driver_connection
            try:
                return await_(raw.fetch(sql, *args))  # type: ignore[union-attr, no-any-return]
            except Exception as e:
                # Past SQLAlchemy, so tell its pool: a dead connection must not go back.
                if raw.is_closed() or isinstance(e, OSError):  # type: ignore[union-attr]
                    c.invalidate(e)
                    raise Disconnected(str(e)) from e
                raise
        return c.execute(self.stmt, params).all()

    def first(self, c: Connection, params: dict[str, Any]) -> Any:
        rows = self.all(c, params)
        return rows[0] if rows else None

    def scalar(self, c: Connection, params: dict[str, Any]) -> Any:
        rows = self.all(c, params)
        return rows[0][0] if rows else None
