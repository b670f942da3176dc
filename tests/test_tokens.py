"""Play and push tokens: round trip, tampering, expiry, single use, unlimited play,
wrong kind or subject, key rotation, an async shared store, and fuzzing."""

from __future__ import annotations

import asyncio
import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotvideo.media.tokens import TokenError, TokenSigner, UsedTokens

KEY = b"k" * 32
NOW = 1_700_000_000.0
SUBJECT = "Zw7n6k7D8mDqcnuyklLx000100/0"


def signer(**kw: object) -> TokenSigner:
    return TokenSigner(KEY, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def reason(fn: object, *args: object, **kw: object) -> str:
    with pytest.raises(TokenError) as e:
        fn(*args, **kw)  # type: ignore[operator]
    return str(e.value.reason)


def test_round_trip_is_compact_and_url_safe() -> None:
    s = signer()
    token = s.issue("play", SUBJECT, ttl_s=10, extra=None, now=NOW)
    assert len(token) <= 120 and all(c.isalnum() or c in "-_" for c in token)
    claims = s.verify(token, "play", SUBJECT, now=NOW + 5)
    assert (claims.kind, claims.subject, claims.single_use) == ("play", SUBJECT, True)
    assert claims.issued_at == int(NOW) and claims.expires_at == int(NOW) + 10
    assert claims.extra == {} and len(claims.token_id) == 32 and claims.token_id not in token
    assert len(s.issue("push", "x" * 54, 14400)) <= 120
    with_extra = s.issue("push", "session-42", 60, extra={"iot": "abc", "st": 1})
    assert s.verify(with_extra, "push").extra == {"iot": "abc", "st": 1}


def test_subject_is_optional_at_verify() -> None:
    s = signer()
    token = s.issue("push", SUBJECT, 30)
    assert s.verify(token, "push").subject == SUBJECT


def test_tampering_is_refused() -> None:
    s = signer()
    token = s.issue("play", SUBJECT, 10)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for i in range(len(raw)):
        changed = bytearray(raw)
        changed[i] ^= 0x01
        forged = base64.urlsafe_b64encode(bytes(changed)).rstrip(b"=").decode()
        assert reason(s.verify, forged, "play") in (TokenError.BAD_SIGNATURE, TokenError.MALFORMED)
    assert reason(s.verify, token[:-1], "play") in (TokenError.BAD_SIGNATURE, TokenError.MALFORMED)
    assert reason(s.verify, token + "A", "play") in (TokenError.BAD_SIGNATURE, TokenError.MALFORMED)
    assert reason(s.verify, token + "=", "play") == TokenError.MALFORMED
    assert reason(s.verify, token[:10] + "." + token[10:], "play") == TokenError.MALFORMED
    other = TokenSigner(b"o" * 32, clock=lambda: NOW)
    assert reason(other.verify, token, "play") == TokenError.BAD_SIGNATURE
    assert s.verify(token, "play").subject == SUBJECT  # none of the failures spent it


def test_expiry_is_for_the_first_use() -> None:
    s = signer()
    token = s.issue("play", SUBJECT, 10, now=NOW)
    assert reason(s.verify, token, "play", now=NOW + 10.5) == TokenError.EXPIRED
    assert s.verify(token, "play", now=NOW + 10).subject == SUBJECT  # the last second still counts
    fractional = s.issue("play", SUBJECT, 10, now=NOW + 0.6)
    assert s.verify(fractional, "play", now=NOW + 10.6).expires_at == int(NOW) + 11


def test_single_use() -> None:
    s = signer()
    token = s.issue("play", SUBJECT, 10)
    s.verify(token, "play", SUBJECT)
    assert reason(s.verify, token, "play", SUBJECT) == TokenError.USED
    # a second token for the same subject is independent
    s.verify(s.issue("play", SUBJECT, 10), "play", SUBJECT)


def test_unlimited_play_until_expiry() -> None:
    s = signer()
    token = s.issue("play", SUBJECT, 10, single_use=False)
    for _ in range(5):
        assert s.verify(token, "play").single_use is False
    assert reason(s.verify, token, "play", now=NOW + 11) == TokenError.EXPIRED


def test_wrong_kind_or_subject_does_not_spend_the_token() -> None:
    s = signer()
    token = s.issue("push", SUBJECT, 10)
    assert reason(s.verify, token, "play") == TokenError.WRONG_KIND
    assert reason(s.verify, token, "push", "other/0") == TokenError.WRONG_SUBJECT
    assert reason(s.verify, token, "push", SUBJECT, now=NOW + 60) == TokenError.EXPIRED
    assert s.verify(token, "push", SUBJECT).kind == "push"


def test_key_rotation() -> None:
    old = TokenSigner(b"old-key-0123456789", clock=lambda: NOW)
    token = old.issue("play", SUBJECT, 10)
    new = TokenSigner(b"new-key-0123456789", previous_keys=[b"old-key-0123456789"], clock=lambda: NOW)
    assert new.verify(token, "play").subject == SUBJECT
    assert reason(TokenSigner(b"new-key-0123456789", clock=lambda: NOW).verify, token, "play") == TokenError.BAD_SIGNATURE


def test_bad_arguments() -> None:
    s = signer()
    with pytest.raises(ValueError):
        TokenSigner(b"short")
    for kw in ({"ttl_s": 0}, {"ttl_s": -1}, {"ttl_s": 10**9}):
        with pytest.raises(ValueError):
            s.issue("play", SUBJECT, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        s.issue("view", SUBJECT, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        s.issue("play", "x" * 256, 10)


def test_used_store_sweeps_expired_ids() -> None:
    used = UsedTokens(sweep_every_s=60)
    assert used.claim("a", expires_at=100, now=50) and not used.claim("a", 100, 51)
    assert used.claim("b", expires_at=500, now=52)
    assert len(used) == 2
    assert used.claim("c", 600, now=200)  # a sweep is due: "a" has expired
    assert len(used) == 2 and not used.claim("b", 500, 201)


class AsyncStore:
    """What a shared store (Redis ``SET NX EX``, an SQL insert) looks like."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    async def claim(self, token_id: str, expires_at: float, now: float) -> bool:
        await asyncio.sleep(0)
        if token_id in self.ids:
            return False
        self.ids.add(token_id)
        return True


def test_async_shared_store() -> None:
    store = AsyncStore()
    node_a = signer(used=store)
    node_b = signer(used=store)
    token = node_a.issue("play", SUBJECT, 10)

    async def main() -> None:
        assert (await node_b.verify_async(token, "play")).subject == SUBJECT
        with pytest.raises(TokenError) as e:
            await node_a.verify_async(token, "play")
        assert e.value.reason == TokenError.USED

    asyncio.run(main())
    with pytest.raises(TypeError):
        node_a.verify(node_a.issue("play", SUBJECT, 10), "play")


def test_error_message_never_contains_the_token() -> None:
    s = signer()
    token = s.issue("play", SUBJECT, 10)
    s.verify(token, "play")
    with pytest.raises(TokenError) as e:
        s.verify(token, "play")
    assert token not in str(e.value) and token not in repr(e.value)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=200)))
def test_random_strings_never_verify(text: str) -> None:
    s = signer()
    with pytest.raises(TokenError):
        s.verify(text, "play")
    with pytest.raises(TokenError):
        s.verify(text, "push", "a/0")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_random_payloads_never_verify(raw: bytes) -> None:
    s = signer()
    token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    with pytest.raises(TokenError):
        s.verify(token, "play")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=3), st.text(max_size=3))
def test_edited_tokens_never_verify(pos: int, cut: int, insert: str) -> None:
    s = signer()
    token = s.issue("play", SUBJECT, 10, single_use=False)
    pos %= len(token) + 1
    edited = token[:pos] + insert + token[pos + cut :]
    if edited == token:
        assert s.verify(edited, "play").subject == SUBJECT
    else:
        with pytest.raises(TokenError):
            s.verify(edited, "play")
