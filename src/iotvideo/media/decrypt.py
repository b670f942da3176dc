"""Key-frame encryption of live video (``EncryptType`` 1, AES-128-CBC) and the reference decryptor.

Layout (what a camera encrypts; the server relays it untouched; a player with the key undoes it):

* Only the NAL units that are slices of a key picture are encrypted: H.264 ``nal_unit_type`` 5
  (IDR slice); H.265 ``nal_unit_type`` 16..21 (BLA, IDR, CRA: IRAP slices).  Parameter sets
  (SPS, PPS, VPS), SEI, access unit delimiters, every non-IRAP slice and all audio stay in clear.
  So do the RTMP/FLV tag headers (frame type, codec id, packet type, composition time), the
  AVC/HEVC decoder configuration record, and the 4-byte (``lengthSizeMinusOne`` + 1) NAL length
  prefixes.
* In each such NAL unit, its header stays in clear: 1 byte for H.264, 2 bytes for H.265.  The
  rest of the NAL unit — exactly as carried, emulation-prevention bytes included — is the body.
* The body's first ``16 * floor(len(body) / 16)`` bytes are encrypted with AES-128-CBC using the
  session ``Key`` and ``Iv`` (16 bytes each, given base64 in ``StartPushStreaming``); the CBC chain
  restarts from ``Iv`` for every NAL unit.  The last ``len(body) % 16`` bytes stay in clear.  There
  is no padding: every NAL unit keeps its length, so lengths, tag sizes and timestamps are valid.
* Decrypting is the same with AES-128-CBC decryption.  Nothing authenticates the data: a wrong key
  just gives garbage slices, which :func:`decrypt_flv` detects by checking the decrypted slice
  headers (slice type I, a known PPS, a picture's first slice at address 0).

:func:`decrypt_flv` turns an FLV capture of an encrypted stream (``ffmpeg -i URL -c copy x.flv``)
into a playable FLV; ``iotvideo decrypt`` (:func:`decrypt_command`) is its command line.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import typer
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .codecs import BitReader, CodecError, parse_avc_config, parse_hevc_config, unescape_rbsp
from .flvtags import FlvError, parse_video
from .frames import Codec

__all__ = [
    "DecryptStats",
    "FlvFormatError",
    "KeyFrameCipher",
    "WrongKey",
    "decrypt_command",
    "decrypt_flv",
    "is_encrypted_nal",
]

BLOCK: Final = 16


class WrongKey(ValueError):
    """The decrypted key frames are not valid video: the key or IV is wrong (or the input is not encrypted)."""


class FlvFormatError(ValueError):
    """The input is not an FLV file."""


def is_encrypted_nal(codec: Codec, header: int) -> bool:
    """Whether a NAL unit whose first byte is ``header`` is encrypted (an IDR/IRAP slice)."""
    if codec is Codec.H264:
        return header & 0x1F == 5
    return 16 <= (header >> 1) & 0x3F <= 21


class KeyFrameCipher:
    """AES-128-CBC key-frame encryption of length-prefixed video samples, as in the module docstring."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        if len(key) != 16 or len(iv) != 16:
            raise ValueError("AES-128-CBC needs a 16-byte key and a 16-byte IV")
        self._cipher = Cipher(algorithms.AES(key), modes.CBC(iv))

    @classmethod
    def from_base64(cls, key: str, iv: str) -> KeyFrameCipher:
        """From the base64 ``Key`` and ``Iv`` of the push call (``ValueError`` if they are not 16 bytes each)."""
        try:
            return cls(base64.b64decode(key, validate=True), base64.b64decode(iv, validate=True))
        except binascii.Error as exc:
            raise ValueError(f"key or IV is not base64: {exc}") from None

    def encrypt_sample(self, codec: Codec, data: bytes, length_size: int = 4) -> bytes:
        """``data`` (length-prefixed NAL units) with its key-picture slices encrypted."""
        return self._apply(codec, data, length_size, encrypt=True)

    def decrypt_sample(self, codec: Codec, data: bytes, length_size: int = 4) -> bytes:
        """The inverse of :meth:`encrypt_sample`."""
        return self._apply(codec, data, length_size, encrypt=False)

    def _apply(self, codec: Codec, data: bytes, length_size: int, *, encrypt: bool) -> bytes:
        header = 1 if codec is Codec.H264 else 2
        out: bytearray | None = None
        pos, end = 0, len(data)
        while pos + length_size <= end:
            n = int.from_bytes(data[pos : pos + length_size], "big")
            start = pos + length_size
            if start + n > end:
                break  # a malformed sample: the rest is left as it is
            body = n - header
            if body >= BLOCK and is_encrypted_nal(codec, data[start]):
                if out is None:
                    out = bytearray(data)
                a = start + header
                b = a + body - body % BLOCK
                ctx = self._cipher.encryptor() if encrypt else self._cipher.decryptor()
                out[a:b] = ctx.update(data[a:b]) + ctx.finalize()
            pos = start + n
        return bytes(out) if out is not None else data


# --- checking a decryption ---------------------------------------------------------------------------


@dataclass
class _Config:
    codec: Codec
    length_size: int
    pps_ids: frozenset[int]
    extra_bits: dict[int, int]  # H.265: pps id -> num_extra_slice_header_bits


def _config(codec: Codec, record: bytes) -> _Config | None:
    try:
        if codec is Codec.H264:
            avc = parse_avc_config(record)
            ids = set()
            for pps in avc.pps:
                ids.add(BitReader(unescape_rbsp(pps[1:])).ue())
            return _Config(codec, avc.nal_length_size, frozenset(ids), {})
        hevc = parse_hevc_config(record)
        extra: dict[int, int] = {}
        for pps in hevc.pps:
            r = BitReader(unescape_rbsp(pps[2:]))
            pps_id = r.ue()
            r.ue()  # pps_seq_parameter_set_id
            r.skip(2)  # dependent_slice_segments_enabled_flag, output_flag_present_flag
            extra[pps_id] = r.u(3)
        return _Config(codec, hevc.nal_length_size, frozenset(extra), extra)
    except CodecError:
        return None


def _slice_ok(config: _Config, nal: bytes, first: bool) -> bool:
    """Whether a (decrypted) key-picture slice header is plausible."""
    try:
        if config.codec is Codec.H264:
            r = BitReader(unescape_rbsp(nal[1:48]))
            first_mb, slice_type, pps_id = r.ue(), r.ue(), r.ue()
            return slice_type in (2, 4, 7, 9) and pps_id in config.pps_ids and (first_mb == 0 or not first)
        r = BitReader(unescape_rbsp(nal[2:48]))
        first_in_pic = r.flag()
        r.skip(1)  # no_output_of_prior_pics_flag
        pps_id = r.ue()
        if pps_id not in config.pps_ids:
            return False
        if not first_in_pic:
            return not first
        r.skip(config.extra_bits[pps_id])
        return r.ue() == 2  # an IRAP picture's slices are I slices
    except CodecError:
        return False


# --- FLV ---------------------------------------------------------------------------------------------


@dataclass
class DecryptStats:
    """What :func:`decrypt_flv` did."""

    tags: int = 0
    video_tags: int = 0
    key_frames: int = 0
    decrypted_nalus: int = 0
    bad_key_frames: int = 0
    truncated: bool = False


def decrypt_flv(data: bytes, key: bytes, iv: bytes, *, verify: bool = True) -> tuple[bytes, DecryptStats]:
    """The FLV ``data`` with its key frames decrypted, and statistics.

    With ``verify``, raises :class:`WrongKey` when a decrypted key frame is not valid video.
    A truncated last tag (a capture cut short) is dropped.  Raises :class:`FlvFormatError` if
    ``data`` is not FLV.
    """
    if len(data) < 13 or data[:3] != b"FLV":
        raise FlvFormatError("not an FLV file (no FLV signature)")
    offset = struct.unpack_from(">I", data, 5)[0]
    if offset < 9 or offset + 4 > len(data):
        raise FlvFormatError("FLV header with an impossible data offset")
    cipher = KeyFrameCipher(key, iv)
    stats = DecryptStats()
    out = bytearray(data[: offset + 4])
    configs: dict[Codec, _Config] = {}
    pos = offset + 4
    while pos < len(data):
        if pos + 11 > len(data):
            stats.truncated = True
            break
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        end = pos + 11 + size
        if end + 4 > len(data):
            stats.truncated = True
            break
        kind = data[pos] & 0x1F
        body = data[pos + 11 : end]
        stats.tags += 1
        if kind == 9 and body:
            stats.video_tags += 1
            body = _decrypt_video(body, cipher, configs, stats)
        out += data[pos : pos + 11] + body + data[end : end + 4]
        pos = end + 4
    if verify and stats.bad_key_frames:
        raise WrongKey(f"{stats.bad_key_frames} of {stats.key_frames} key frames do not decrypt to valid video: "
                       "the key or IV is wrong, or the stream is not encrypted")
    return bytes(out), stats


def _decrypt_video(body: bytes, cipher: KeyFrameCipher, configs: dict[Codec, _Config], stats: DecryptStats) -> bytes:
    timestamp = 0
    try:
        frame = parse_video(body, timestamp)
    except FlvError:
        return body
    if frame is None:
        return body
    if frame.is_config:
        config = _config(frame.codec, frame.data)
        if config is not None:
            configs[frame.codec] = config
        return body
    if not body.endswith(frame.data):  # Annex B in the tag: not something this layout produces
        return body
    config = configs.get(frame.codec) or _Config(frame.codec, 4, frozenset(), {})
    header = 1 if frame.codec is Codec.H264 else 2
    clear = cipher.decrypt_sample(frame.codec, frame.data, config.length_size)
    keys = [n for n in _nalus(clear, config.length_size)
            if len(n) >= header + BLOCK and is_encrypted_nal(frame.codec, n[0])]  # fmt: skip
    if keys:
        stats.key_frames += 1
        stats.decrypted_nalus += len(keys)
        if config.pps_ids and not all(_slice_ok(config, n, i == 0) for i, n in enumerate(keys)):
            stats.bad_key_frames += 1
    return body[: len(body) - len(frame.data)] + clear


def _nalus(data: bytes, length_size: int) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    while pos + length_size <= len(data):
        n = int.from_bytes(data[pos : pos + length_size], "big")
        out.append(data[pos + length_size : pos + length_size + n])
        pos += length_size + n
    return out


# --- command line ------------------------------------------------------------------------------------


def _b64_16(value: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise typer.BadParameter("must be base64 of 16 bytes", param_hint=what)
    return raw


def decrypt_command(
    source: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="Encrypted FLV capture."),
    dest: Path = typer.Argument(..., dir_okay=False, help="Where to write the decrypted FLV."),
    key: str = typer.Option(..., "--key", help="The session's AES-128 key (base64)."),
    iv: str = typer.Option(..., "--iv", help="The session's AES-128 IV (base64)."),
    force: bool = typer.Option(False, "--force", help="Write the output even if the key looks wrong."),
) -> None:
    """Decrypt the key frames of an encrypted live stream captured as FLV (EncryptType 1, AES-128-CBC)."""
    raw_key, raw_iv = _b64_16(key, "--key"), _b64_16(iv, "--iv")
    try:
        out, stats = decrypt_flv(source.read_bytes(), raw_key, raw_iv, verify=not force)
    except (WrongKey, FlvFormatError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    dest.write_bytes(out)
    note = " (the last tag was truncated and dropped)" if stats.truncated else ""
    typer.echo(f"{dest}: {stats.video_tags} video tags, {stats.key_frames} key frames decrypted "
               f"({stats.decrypted_nalus} NAL units){note}")
    if not stats.key_frames:
        typer.echo("warning: no encrypted key frames found", err=True)
