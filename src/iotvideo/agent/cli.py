"""``iotvideo camera``: run the device agent (one camera) until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Optional

import typer

from iotvideo.devicelink.auth import valid_device_name, valid_product_key

log = logging.getLogger("iotvideo.agent")


def _check_source(source: str) -> str:
    if source == "virtual" or source.startswith(("rtsp://", "rtsps://")):
        return source
    if Path(source).is_file():
        return source
    raise typer.BadParameter("must be 'virtual', an rtsp:// URL or an existing file", param_hint="--source")


def camera(
    server: str = typer.Option(..., "--server", help="Host name or address of the iotvideo server's MQTT endpoint."),
    mqtt_port: Optional[int] = typer.Option(None, "--mqtt-port", help="MQTT port (default 1883; 8883 with --tls)."),
    product_key: str = typer.Option(..., "--product-key", help="The device's ProductKey."),
    device_name: str = typer.Option(..., "--device-name", help="The device's DeviceName."),
    device_secret: str = typer.Option(..., "--device-secret", envvar="IOTVIDEO_DEVICE_SECRET", show_envvar=True,
                                      help="The device's DeviceSecret (never logged)."),
    source: str = typer.Option("virtual", "--source",
                               help="Video source: virtual (test picture), rtsp://… or a file (relayed as is)."),
    codec: str = typer.Option("h264", "--codec", help="Codec of the virtual camera: h264 or h265."),
    audio: Optional[bool] = typer.Option(None, "--audio/--no-audio",
                                         help="A beep (virtual: default off; see --audio-codec) / relay the audio "
                                              "(default on)."),
    audio_codec: str = typer.Option("aac", "--audio-codec",
                                    help="Codec of the virtual camera's tone with --audio: aac, g711a or g711u."),
    simulate_motion_every: Optional[float] = typer.Option(
        None, "--simulate-motion-every", metavar="SECONDS",
        help="Post a motion AlarmEvent every SECONDS while AlarmSwitch is on."),
    firmware: str = typer.Option("1.0.0", "--firmware", help="Firmware version to report."),
    tls: bool = typer.Option(False, "--tls", help="Connect with TLS (securemode=2)."),
    ca_file: Optional[Path] = typer.Option(None, "--ca-file", help="PEM CA bundle to verify the server with --tls "
                                           "(default: the system's)."),
    keepalive: int = typer.Option(60, "--keepalive", help="MQTT keep-alive in seconds."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Run a camera (the device agent) that connects to the server with the device protocol."""
    import ssl

    from iotvideo.agent.device import CameraAgent, MediaBackend, UnsupportedMedia
    from iotvideo.logs import setup_logging

    if not valid_product_key(product_key):
        raise typer.BadParameter("must be 1..32 letters and digits", param_hint="--product-key")
    if not valid_device_name(device_name):
        raise typer.BadParameter("must be 4..32 characters of letters, digits and -_@.:", param_hint="--device-name")
    if simulate_motion_every is not None and not simulate_motion_every > 0:
        raise typer.BadParameter("must be a positive number of seconds", param_hint="--simulate-motion-every")
    if not 0 <= keepalive <= 65535:
        raise typer.BadParameter("must be 0..65535", param_hint="--keepalive")
    _check_source(source)
    if codec not in ("h264", "h265"):
        raise typer.BadParameter("must be h264 or h265", param_hint="--codec")
    if audio_codec not in ("aac", "g711a", "g711u"):
        raise typer.BadParameter("must be aac, g711a or g711u", param_hint="--audio-codec")
    context: ssl.SSLContext | None = None
    if tls:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    elif ca_file is not None:
        raise typer.BadParameter("needs --tls", param_hint="--ca-file")
    port = mqtt_port if mqtt_port is not None else (8883 if tls else 1883)
    setup_logging(log_level)
    try:
        from iotvideo.agent.media import LiveMedia
    except ImportError as exc:  # no PyAV: the agent answers the media services with 501
        log.warning("live media unavailable (%s)", exc)
        media: MediaBackend = UnsupportedMedia(source)
    else:
        media = LiveMedia(source, codec=codec, audio=audio_codec if audio and source == "virtual" else audio)
    try:
        agent = CameraAgent(server, port, product_key, device_name, device_secret, source=source,
                            firmware=firmware, simulate_motion_every=simulate_motion_every, ssl=context,
                            keepalive=keepalive, media=media)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--firmware") from None

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        agent.start()
        await stop.wait()
        log.info("stopping on signal")
        await agent.stop()

    asyncio.run(main())
