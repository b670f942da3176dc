"""Server settings, read once from options, environment (IOTVIDEO_*) and defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything configurable about one server process (see docs/operations.md)."""

    model_config = SettingsConfigDict(env_prefix="IOTVIDEO_", extra="ignore")

    data_dir: Path = Field(default=Path("./data"), description="Holds the SQLite file, the master key and objects.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite+aiosqlite in data_dir.")
    master_key: str | None = Field(default=None, description="Base64 32-byte key encrypting secrets at rest; default data_dir/master.key.")
    host: str = "127.0.0.1"
    http_port: int = 8080
    # Anti-replay window: a request's timestamp must be within this many seconds of now,
    # and its nonce is remembered that long.
    replay_window_s: int = 900
    # Per-AccessKey token bucket: sustained requests/s and burst.
    rate_limit_per_s: float = 500.0
    rate_limit_burst: int = 1000
    host_id: str = "iotvideo"
    # Device link (MQTT). mqtt_mode "embedded" runs our broker on mqtt_port (and on
    # mqtt_tls_port when a certificate is given); "external" connects to mqtt_broker_url
    # as a privileged client instead (docs/device-protocol.md, "External broker").
    mqtt_mode: str = "embedded"
    mqtt_host: str | None = Field(default=None, description="Address the broker listens on; default: host.")
    mqtt_port: int = 1883
    mqtt_tls_port: int = 8883
    tls_cert: Path | None = None
    tls_key: Path | None = None
    mqtt_broker_url: str = "mqtt://127.0.0.1:1883"
    mqtt_broker_username: str | None = None
    mqtt_broker_password: str | None = None
    mqtt_share_group: str = "iotvideo"
    # Embedded broker: CONNECTs authenticated at once; beyond it a CONNECT gets CONNACK 3.
    mqtt_max_pending_auth: int = Field(default=512, ge=1)
    # How long a cloud→device service call waits for the device's reply.
    rpc_timeout_s: float = 5.0
    # Live media (docs/media.md): RTMP publish and play; HTTP-FLV and HLS share http_port.
    rtmp_host: str | None = Field(default=None, description="Address the RTMP server listens on; default: host.")
    rtmp_port: int = 1935
    # Host name players and devices use in live URLs (QueryLiveStreaming, push URLs); default: host.
    public_host: str | None = None
    # A stream nobody watches (and, once its publisher left, nobody publishes) for this long is idle.
    media_idle_s: float = 30.0
    log_level: str = "info"

    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://"):
                url = "postgresql+asyncpg://" + url[len("postgresql://"):]
            return url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'iotvideo.db').resolve()}"
