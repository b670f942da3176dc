"""PostgreSQL read units on kept connections (store/units.py PgStore): bounded, reused after
errors, and a read survives the server dropping every connection."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from conftest import PG_ADMIN_URL, _pg_admin, pg_available
from iotvideo.store.units import PG_READ_POOL, PgStore, Query, Store


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if not pg_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable on the loopback")
        pytest.skip("PostgreSQL not reachable")
    name = "iotvideo_units_" + secrets.token_hex(4)
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + name
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


ONE = Query(text("SELECT 1").columns())


def run(url: str, fn) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        store = Store.open(url)
        assert isinstance(store, PgStore)
        try:
            await fn(store)
        finally:
            await store.close()

    asyncio.run(go())


def test_concurrent_reads_share_a_bounded_set_of_connections(pg_url: str) -> None:
    async def go(store: PgStore) -> None:
        sleep = text("SELECT pg_sleep(0.02), 7")
        results = await asyncio.gather(*(store.read(lambda c: c.execute(sleep).one()[1]) for _ in range(3 * PG_READ_POOL[0])))
        assert results == [7] * (3 * PG_READ_POOL[0])
        assert store._open == PG_READ_POOL[0] == len(store._idle)
        # Query (straight to asyncpg) and SQLAlchemy statements in one unit, on a kept connection.
        assert await store.read(lambda c: (ONE.scalar(c, {}), c.execute(text("SELECT 2")).scalar())) == (1, 2)

    run(pg_url, go)


def test_a_unit_that_raises_gives_its_connection_back(pg_url: str) -> None:
    async def go(store: PgStore) -> None:
        def bad(c):  # type: ignore[no-untyped-def]
            c.execute(text("SELECT 1"))
            raise LookupError("not found")

        for _ in range(20):
            with pytest.raises(LookupError):
                await store.read(bad)
        # An SQL error too (the statement fails at the server; the connection is fine).
        with pytest.raises(Exception):
            await store.read(lambda c: c.execute(text("SELECT no_such_column")).all())
        assert store._open == 1 and len(store._idle) == 1
        assert await store.read(lambda c: ONE.scalar(c, {})) == 1

    run(pg_url, go)


def test_a_read_survives_the_server_dropping_every_connection(pg_url: str) -> None:
    db = pg_url.rsplit("/", 1)[1]

    async def go(store: PgStore) -> None:
        await asyncio.gather(*(store.read(lambda c: c.execute(text("SELECT pg_sleep(0.01)")).all()) for _ in range(4)))
        assert len(store._idle) == 4
        for fn in (lambda c: ONE.scalar(c, {}), lambda c: c.execute(text("SELECT 1")).scalar()):
            await _pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' "
                            "AND pid <> pg_backend_pid()")
            await asyncio.sleep(0.2)
            assert await store.read(fn) == 1  # retried once, on a fresh connection
            assert store._open <= 4

    run(pg_url, go)
