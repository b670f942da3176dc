"""G.711 (A-law/µ-law) to AAC-LC, frame by frame, for outputs that cannot carry G.711 (HLS/fMP4).

``G711ToAac`` is sans-IO: ``feed(frame)`` takes one G.711 ``MediaFrame`` and returns the
AAC ``MediaFrame``s that became ready (the AudioSpecificConfig first, once); ``flush()``
drains the encoder when the stream ends. PyAV (FFmpeg) decodes, resamples and encodes.

Time: each output frame's timestamp is derived from the input timeline, not from a
running clock: the encoder's sample position plus the input time at which the current
run began. Input that is late or early by more than ``tolerance_ms`` (a gap or an overlap,
including a camera clock that drifts against its sample count) is filled with silence or
trimmed, so the output never drifts; a jump of more than ``max_gap_ms`` either way starts
a new run (the encoder is drained first). A change of G.711 law, rate or channel count
keeps the run going. Memory is bounded: the encoder holds about two AAC frames, a gap is
filled at most ``max_gap_ms`` long and an input frame longer than ``max_frame_ms`` is
refused. A frame it cannot use (not G.711, empty, odd channel layout or rate) is dropped
and counted in ``dropped``; ``feed`` never raises for bad input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

import av
from av.audio.resampler import AudioResampler

from .frames import Codec, MediaFrame

__all__ = ["AAC_RATES", "G711ToAac", "TranscodeStats", "aac_config"]

log = logging.getLogger("iotvideo.media.transcode")

# AudioSpecificConfig sampling frequency indexes (ISO/IEC 14496-3 1.6.3.4)
AAC_RATES: Final = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_AAC_LC: Final = 2
_G711: Final = {Codec.PCMA: "pcm_alaw", Codec.PCMU: "pcm_mulaw"}
_SILENCE: Final = {Codec.PCMA: 0xD5, Codec.PCMU: 0xFF}  # the code of amplitude 0 in each law
_MIN_RATE: Final = 4000
_MAX_RATE: Final = 48000
_MAX_ABS_TS: Final = 1 << 53  # timestamps beyond this are not milliseconds of anything


def aac_config(sample_rate: int, channels: int) -> bytes:
    """The two-byte AAC-LC AudioSpecificConfig for ``sample_rate`` (a standard rate) and 1..7 channels."""
    if sample_rate not in AAC_RATES:
        raise ValueError(f"{sample_rate} Hz is not an AAC sampling frequency")
    if not 1 <= channels <= 7:
        raise ValueError(f"{channels} channels")
    value = (_AAC_LC << 11) | (AAC_RATES.index(sample_rate) << 7) | (channels << 3)
    return value.to_bytes(2, "big")


@dataclass(slots=True)
class TranscodeStats:
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0  # input frames refused: not G.711, empty, impossible rate/layout/time, or FFmpeg failed
    filled_ms: float = 0.0  # silence inserted over gaps
    trimmed_ms: float = 0.0  # overlapping input cut away
    restarts: int = 0  # timeline jumps that started a new run


class G711ToAac:
    """One stream's G.711 → AAC-LC transcoder (mono output at ``sample_rate``).

    ``sample_rate`` 16 kHz: G.711's 8 kHz band intact, 64 ms AAC frames (fine grained for
    LL-HLS parts), accepted by Chromium's and Safari's MSE, and half the frames (so
    cheaper to encode) of 44.1/48 kHz.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        bit_rate: int = 32000,
        tolerance_ms: float = 60.0,
        max_gap_ms: float = 1000.0,
        max_frame_ms: float = 2000.0,
    ) -> None:
        self.config_data = aac_config(sample_rate, 1)
        self.sample_rate = sample_rate
        self.bit_rate = bit_rate
        self.tolerance_ms = tolerance_ms
        self.max_gap_ms = max_gap_ms
        self.max_frame_ms = max_frame_ms
        self.stats = TranscodeStats()
        self._sent_config = False
        self._encoder: av.AudioCodecContext | None = None
        self._decoder: av.AudioCodecContext | None = None
        self._resampler: AudioResampler | None = None
        self._format: tuple[Codec, int, int] | None = None  # the input the decoder is set up for
        self._anchor_ms = 0.0  # input time of the current run's first sample
        self._expected_ms = 0.0  # input time the next input frame should start at
        self._position = 0  # output samples given to the encoder in this run
        self._last_out: int | None = None  # the last output timestamp, ms
        self._floor: int | None = None  # this run's output stays above it (None after a jump back)

    def config_frame(self, dts: int = 0) -> MediaFrame:
        """The AAC configuration record (AudioSpecificConfig) of the output."""
        return MediaFrame(
            Codec.AAC, dts, dts, self.config_data, is_config=True, sample_rate=self.sample_rate, channels=1
        )

    def feed(self, frame: MediaFrame) -> list[MediaFrame]:
        """Take one G.711 frame; return the AAC frames it completed (the config frame first, once)."""
        self.stats.frames_in += 1
        out: list[MediaFrame] = []
        try:
            fmt = self._check(frame)
            if fmt is None:
                self.stats.dropped += 1
                return out
            if not self._sent_config:
                self._sent_config = True
                out.append(self.config_frame(frame.dts))
            self._take(frame, fmt, out)
        except Exception as e:  # FFmpeg refused something: drop this frame, start afresh next time
            self.stats.dropped += 1
            log.debug("G.711 frame at %s ms dropped: %s", frame.dts, e)
            self._drop_state()
        return out

    def flush(self) -> list[MediaFrame]:
        """The stream ended: drain the encoder (the next frame starts a new run)."""
        out: list[MediaFrame] = []
        try:
            self._end_run(out)
        except Exception as e:
            log.debug("G.711 transcoder flush failed: %s", e)
            self._drop_state()
        return out

    # --- input ----------------------------------------------------------------------

    def _check(self, frame: MediaFrame) -> tuple[Codec, int, int] | None:
        if frame.codec not in _G711 or frame.is_config or not frame.data:
            return None
        rate = frame.sample_rate or 8000
        channels = frame.channels or 1
        if not _MIN_RATE <= rate <= _MAX_RATE or channels not in (1, 2) or len(frame.data) % channels:
            return None
        if len(frame.data) // channels * 1000 > self.max_frame_ms * rate or abs(frame.dts) >= _MAX_ABS_TS:
            return None
        return frame.codec, rate, channels

    def _take(self, frame: MediaFrame, fmt: tuple[Codec, int, int], out: list[MediaFrame]) -> None:
        codec, rate, channels = fmt
        data = frame.data
        if self._encoder is None:
            self._start_run(frame.dts)
        else:
            diff = frame.dts - self._expected_ms
            if abs(diff) > self.max_gap_ms:
                self._end_run(out)
                self.stats.restarts += 1
                self._start_run(frame.dts)
        if fmt != self._format:
            self._set_input(fmt, out)
        diff = frame.dts - self._expected_ms
        if diff > self.tolerance_ms:  # a gap: silence up to this frame's start
            n = round(diff * rate / 1000)
            self._decode(bytes((_SILENCE[codec],)) * (n * channels), out)
            self._expected_ms += n * 1000 / rate
            self.stats.filled_ms += n * 1000 / rate
        elif diff < -self.tolerance_ms:  # an overlap: cut what was already encoded
            skip = round(-diff * rate / 1000)
            if skip * channels >= len(data):
                self.stats.trimmed_ms += len(data) // channels * 1000 / rate
                return
            data = data[skip * channels :]
            self.stats.trimmed_ms += skip * 1000 / rate
        self._decode(data, out)
        self._expected_ms += len(data) // channels * 1000 / rate

    def _start_run(self, dts: int) -> None:
        enc = av.CodecContext.create("aac", "w")
        assert isinstance(enc, av.AudioCodecContext)
        enc.sample_rate = self.sample_rate
        enc.layout = "mono"
        enc.format = "fltp"
        enc.bit_rate = self.bit_rate
        enc.time_base = Fraction(1, self.sample_rate)
        enc.open()
        self._encoder = enc
        self._anchor_ms = self._expected_ms = float(dts)
        self._position = 0
        self._format = None
        last = self._last_out
        self._floor = last if last is not None and dts > last - self.max_gap_ms else None

    def _set_input(self, fmt: tuple[Codec, int, int], out: list[MediaFrame]) -> None:
        if self._resampler is not None:  # what the old resampler still holds belongs before the new input
            self._encode(self._resampler.resample(None), out)
        codec, rate, channels = fmt
        dec = av.CodecContext.create(_G711[codec], "r")
        assert isinstance(dec, av.AudioCodecContext)
        dec.sample_rate = rate
        dec.layout = "stereo" if channels == 2 else "mono"
        dec.open()
        self._decoder = dec
        self._resampler = AudioResampler(format="fltp", layout="mono", rate=self.sample_rate)
        self._format = fmt

    # --- coding ---------------------------------------------------------------------

    def _decode(self, data: bytes, out: list[MediaFrame]) -> None:
        assert self._decoder is not None and self._resampler is not None
        for decoded in self._decoder.decode(av.Packet(data)):
            self._encode(self._resampler.resample(decoded), out)

    def _encode(self, frames: list[av.AudioFrame], out: list[MediaFrame]) -> None:
        enc = self._encoder
        assert enc is not None
        for f in frames:
            f.pts = self._position
            f.time_base = enc.time_base
            self._position += f.samples
            self._packets(enc.encode(f), out)

    def _packets(self, packets: list[av.Packet], out: list[MediaFrame]) -> None:
        rate = self.sample_rate
        for p in packets:
            if p.pts is None or p.pts < 0:  # the encoder's priming frame: nothing of the input in it
                continue
            t = round(self._anchor_ms + p.pts * 1000 / rate)
            if self._floor is not None and t <= self._floor:
                continue  # overlaps what the previous run sent
            self._last_out = self._floor = t
            out.append(MediaFrame(Codec.AAC, t, t, bytes(p)))
            self.stats.frames_out += 1

    def _end_run(self, out: list[MediaFrame]) -> None:
        if self._encoder is None:
            return
        if self._resampler is not None:
            self._encode(self._resampler.resample(None), out)
        self._packets(self._encoder.encode(None), out)
        self._drop_state()

    def _drop_state(self) -> None:
        self._encoder = self._decoder = None
        self._resampler = None
        self._format = None
