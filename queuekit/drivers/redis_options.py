"""``RedisOptions``: the validated ``queue.redis`` section of the config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError

__all__ = ["DEFAULT_URL", "RedisOptions"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"


class RedisOptions(BaseModel):
    """Options of the ``queue.redis`` section.

    ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``; password and database number
    come through the URL) or ``connection``, the name of one of ``connections`` (a map of
    names to URLs; the name ``default`` falls back to ``url``). ``queue`` is the queue a worker
    on every queue watches even before anything was pushed. ``retry_after`` is the lease in
    seconds; ``prefix`` starts every key; ``block_for`` bounds one blocking wait (seconds).
    ``cluster`` uses redis-py's ``RedisCluster`` client for a Redis Cluster.
    """

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    connection: str | None = None
    connections: dict[str, str] = Field(default_factory=dict)
    queue: str = Field("default", min_length=1)
    retry_after: float = Field(90.0, gt=0)
    prefix: str = Field("queuekit", min_length=1)
    block_for: float = Field(5.0, gt=0)
    cluster: bool = False
    connect_timeout: float = Field(5.0, gt=0)
    socket_timeout: float = Field(10.0, gt=0)

    def resolved_url(self) -> str:
        """The URL to connect to; ``ConfigError`` for a connection name that is not defined."""
        name = self.connection
        if name is not None and name in self.connections:
            return self.connections[name]
        if name is not None and name != "default":
            known = ", ".join(sorted(self.connections)) or "none"
            raise ConfigError(
                f"queue.redis.connection: unknown connection {name!r}; "
                f"queue.redis.connections defines: {known}"
            )
        return self.url or DEFAULT_URL
