"""``DatabaseOptions``: the ``queue.database`` section, shared by every SQL dialect.

Example::

    options = DatabaseOptions.parse({"url": "sqlite:///storage/queue/jobs.db"})
    options.table          # "queue_jobs"
    options.retry_after    # 90.0

Dialect-specific settings travel in the URL's query string (for SQLite
``sqlite:///jobs.db?synchronous=full``), so this model stays the same for every dialect.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...config import parse_options
from ...errors import ConfigError

__all__ = ["DatabaseOptions", "url_options"]

# Table names are spliced into SQL text (placeholders cannot name a table), so only plain
# identifiers are accepted: nothing a config file holds can reach the SQL as code.
_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


class DatabaseOptions(BaseModel):
    """Validated options of the ``database`` driver, whatever the dialect.

    - ``url``: ``sqlite:///path/to/jobs.db``, ``postgresql://user@host/db`` or
      ``mysql://user@host/db`` (``mariadb://`` also works); the scheme picks the dialect.
    - ``table`` / ``failed_table``: the tables of pending and running jobs, and of failed jobs.
    - ``retry_after``: lease length in seconds; a job whose worker died runs again after it.
    - ``pool_size``: most connections a server dialect keeps open (SQLite uses one).
    - ``poll_interval``: seconds between looks for new work while a ``reserve`` waits and the
      database cannot wake it (another process dispatched, or a delayed job fell due).
    - ``connect_timeout``: seconds to wait for a connection, or for SQLite's write lock.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1)
    table: str = Field("queue_jobs", pattern=_IDENTIFIER)
    failed_table: str = Field("queue_failed_jobs", pattern=_IDENTIFIER)
    retry_after: float = Field(90.0, gt=0)
    pool_size: int = Field(10, ge=1, le=1000)
    poll_interval: float = Field(0.1, gt=0, le=60)
    connect_timeout: float = Field(10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _has_scheme(cls, url: str) -> str:
        if "://" not in url:
            raise ValueError(
                "expected a URL such as 'sqlite:///storage/queue/jobs.db', "
                "'postgresql://user@host/db' or 'mysql://user@host/db'"
            )
        return url

    @model_validator(mode="after")
    def _tables_differ(self) -> DatabaseOptions:
        if self.table == self.failed_table:
            raise ValueError(f"table and failed_table must differ (both are {self.table!r})")
        return self

    @property
    def scheme(self) -> str:
        """The dialect part of the URL scheme, lower case: ``sqlite``, ``postgresql``, ``mysql``."""
        return self.url.split("://", 1)[0].split("+", 1)[0].lower()

    @classmethod
    def parse(cls, options: Any) -> DatabaseOptions:
        """Validate the ``queue.database`` dict; ``ConfigError`` names the bad key.

        Example: ``queue.database.retry_after: Input should be greater than 0 (got -1)``.
        """
        if isinstance(options, cls):
            return options
        return parse_options(cls, options, "queue.database")


def url_options(query: str, dialect: str, known: tuple[str, ...]) -> dict[str, list[str]]:
    """The options in a URL's query string; ``ConfigError`` names any ``dialect`` does not know."""
    options = parse_qs(query)
    unknown = set(options) - set(known)
    if unknown:
        raise ConfigError(
            f"queue.database.url: unknown {dialect} option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(known)}"
        )
    return options
