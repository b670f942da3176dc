"""Console sign-in throttling: the pure bookkeeping (fake clock) and the real form over HTTP."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from conftest import ServerInfo, start_server, stop_server
from test_cli import iotvideo, one_json

from iotvideo.console.throttle import SignInThrottle


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_five_failures_lock_the_user_name_and_lockouts_double() -> None:
    clock = Clock()
    th = SignInThrottle(max_failures=5, window_s=900, lockout_s=60, max_lockout_s=200, clock=clock)
    for _ in range(4):
        th.failed("Alice", "10.0.0.1")
        assert th.wait_s("alice", "10.0.0.1") == 0
    th.failed("alice ", "10.0.0.2")  # case and spaces do not make another name
    assert th.wait_s("ALICE", "10.0.0.9") == 60
    assert th.wait_s("bob", "10.0.0.1") == 0  # other names from the same peer are not locked
    clock.t += 60
    assert th.wait_s("alice", "10.0.0.1") == 0
    for _ in range(5):
        th.failed("alice", "10.0.0.1")
    assert th.wait_s("alice", "10.0.0.1") == 120  # the second lockout doubles
    clock.t += 120
    for _ in range(5):
        th.failed("alice", "10.0.0.1")
    assert th.wait_s("alice", "10.0.0.1") == 200  # capped at max_lockout_s


def test_failures_outside_the_window_are_forgotten_and_success_clears() -> None:
    clock = Clock()
    th = SignInThrottle(max_failures=3, window_s=100, clock=clock)
    th.failed("carol", "p")
    th.failed("carol", "p")
    clock.t += 101
    th.failed("carol", "p")  # the first two fell out of the window
    assert th.wait_s("carol", "p") == 0
    th.failed("carol", "p")
    th.succeeded("carol")
    th.failed("carol", "p")
    assert th.wait_s("carol", "p") == 0  # the success reset the count


def test_a_noisy_peer_is_locked_whatever_name_it_tries() -> None:
    clock = Clock()
    th = SignInThrottle(max_failures=5, peer_max_failures=10, lockout_s=30, clock=clock)
    for i in range(10):
        th.failed(f"user{i}", "203.0.113.7")
    assert th.wait_s("someone-else", "203.0.113.7") == 30
    assert th.wait_s("someone-else", "203.0.113.8") == 0


def test_memory_is_bounded() -> None:
    clock = Clock()
    th = SignInThrottle(limit=100, clock=clock)
    for i in range(1000):
        clock.t += 1
        th.failed(f"u{i}", f"peer{i}")
    assert len(th) <= 200
    th.failed("last", "peer-last")
    assert len(th) <= 200


# --- the real form ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerInfo, str, str]]:
    srv = start_server("sqlite", tmp_path_factory.mktemp("signin"))
    try:
        username, password = "dave-" + secrets.token_hex(3), secrets.token_urlsafe(12)
        out = one_json(iotvideo("admin", "create-user", username, "--tenant", "signin-test", "--password",
                                password, "--data-dir", srv.data_dir).stdout)
        assert out["Username"] == username
        yield srv, username, password
    finally:
        stop_server(srv)


def _sign_in(c: httpx.Client, username: str, password: str) -> httpx.Response:
    return c.post("/console/login", data={"username": username, "password": password, "next": "/console/"})


def test_wrong_passwords_lock_the_form_with_429(server: tuple[ServerInfo, str, str]) -> None:
    srv, username, password = server
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", follow_redirects=False) as c:
        ok = _sign_in(c, username, password)
        assert ok.status_code == 303 and "iotvideo_console" in ok.cookies
        c.cookies.clear()
        for _ in range(5):
            assert _sign_in(c, username, "wrong-" + secrets.token_hex(4)).status_code == 401
        r = _sign_in(c, username, password)  # the right password, but locked: not even checked
        assert r.status_code == 429
        assert 0 < int(r.headers["Retry-After"]) <= 60
        assert "Too many failed sign-ins" in r.text
        assert "iotvideo_console" not in r.cookies
        # another user name from this address is not locked (peer limit is higher)
        assert _sign_in(c, "nobody-" + secrets.token_hex(3), "whatever-pass").status_code == 401
