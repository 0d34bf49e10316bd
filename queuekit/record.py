"""``JobRecord``: the stored form of a job, the only thing drivers see.

A record is one JSON object with every field always written. Drivers store it and hand it out; they
never import or build job classes. See ``docs/record-format.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import codec
from .errors import CorruptStoreError, PayloadError

if TYPE_CHECKING:
    from .job import QueueJob

__all__ = ["RECORD_VERSION", "JobRecord"]

#: Format version written in ``v``; a later release upgrades older records in ``from_json``.
RECORD_VERSION = 1

_FIELDS: tuple[tuple[str, tuple[type, ...], bool], ...] = (
    # name, accepted JSON types, nullable
    ("id", (str,), False),
    ("job_name", (str,), False),
    ("payload", (dict,), False),
    ("queue", (str,), False),
    ("priority", (int,), False),
    ("attempts", (int,), False),
    ("max_retries", (int,), False),
    ("timeout", (int, float), True),
    ("created_at", (int, float), False),
    ("available_at", (int, float), False),
    ("reserved_until", (int, float), True),
    ("lease_token", (str,), True),
    ("unique_key", (str,), True),
    ("last_error", (str,), True),
    ("failed_at", (int, float), True),
    ("meta", (dict,), False),
)
_FLOAT_FIELDS = frozenset({"timeout", "created_at", "available_at", "reserved_until", "failed_at"})


@dataclass(slots=True, eq=False)
class JobRecord:
    """One queued job as drivers store it.

    Instants (``created_at``, ``available_at``, ``reserved_until``, ``failed_at``) are float epoch
    seconds; ``timeout`` is float seconds. ``attempts`` counts reservations, so it is 1 while the
    first attempt runs. Per-job settings (``max_retries``, ``timeout``, ``priority``) are copied
    in at dispatch so that a deploy does not change jobs already queued.

    ``instance`` is not part of the stored form: in-process drivers (memory, sync) keep the
    dispatched job object there so the worker runs that very object.

    Example::

        record = JobRecord.from_json(json.loads(line))
        assert JobRecord.from_json(record.to_json()).to_json() == record.to_json()
    """

    id: str
    job_name: str
    payload: dict[str, Any]
    queue: str = "default"
    priority: int = 0
    attempts: int = 0
    max_retries: int = 3
    timeout: float | None = None
    created_at: float = 0.0
    available_at: float = 0.0
    reserved_until: float | None = None
    lease_token: str | None = None
    unique_key: str | None = None
    last_error: str | None = None
    failed_at: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    instance: QueueJob | None = field(default=None, repr=False)
    v: int = RECORD_VERSION

    def to_json(self) -> dict[str, Any]:
        """The stored form: a JSON-safe dict with every field, defaults included."""
        return {
            "v": self.v,
            "id": self.id,
            "job_name": self.job_name,
            "payload": self.payload,
            "queue": self.queue,
            "priority": self.priority,
            "attempts": self.attempts,
            "max_retries": self.max_retries,
            "timeout": self.timeout,
            "created_at": self.created_at,
            "available_at": self.available_at,
            "reserved_until": self.reserved_until,
            "lease_token": self.lease_token,
            "unique_key": self.unique_key,
            "last_error": self.last_error,
            "failed_at": self.failed_at,
            "meta": self.meta,
        }

    def unstorable(self, error: Exception) -> PayloadError:
        """The error a driver raises, before storing anything, when this record is not JSON.

        The manager only hands drivers JSON-safe payloads; this names a record that reached a
        driver some other way (a custom dispatcher, a ``meta`` value) and the encoder's reason.
        """
        return PayloadError(
            f"record {self.id} of job type {self.job_name!r} cannot be stored as JSON: {error}"
        )

    def dumps(self) -> str:
        """``to_json()`` encoded as compact JSON text."""
        return codec.dumps(self.to_json())

    @classmethod
    def from_json(cls, data: Any, *, source: str = "record") -> JobRecord:
        """Rebuild a record from its stored form, checking every field.

        ``source`` names where the data came from (a file and line, a table and row) and is put
        in the error. Raises ``CorruptStoreError`` naming the field that is missing or mistyped.
        """
        if not isinstance(data, dict):
            raise CorruptStoreError(
                f"{source}: expected a JSON object, found {type(data).__name__}"
            )
        version = data.get("v")
        if version != RECORD_VERSION:
            raise CorruptStoreError(
                f"{source}: unsupported record format version {version!r} "
                f"(this release reads v{RECORD_VERSION})"
            )
        values: dict[str, Any] = {}
        for name, types, nullable in _FIELDS:
            if name not in data:
                raise CorruptStoreError(f"{source}: field {name!r} is missing")
            value = data[name]
            if value is None:
                if not nullable:
                    raise CorruptStoreError(f"{source}: field {name!r} must not be null")
            elif isinstance(value, bool) or not isinstance(value, types):
                expected = "/".join(t.__name__ for t in types)
                raise CorruptStoreError(
                    f"{source}: field {name!r} should be {expected}, found {type(value).__name__}"
                )
            elif name in _FLOAT_FIELDS:
                value = float(value)
            values[name] = value
        return cls(**values)

    @classmethod
    def loads(cls, text: str | bytes, *, source: str = "record") -> JobRecord:
        """Parse JSON text into a record; bad JSON raises ``CorruptStoreError`` naming it."""
        try:
            data = codec.loads(text)
        except ValueError as e:
            raise CorruptStoreError(f"{source}: not valid JSON ({e})") from e
        return cls.from_json(data, source=source)

    def copy(self) -> JobRecord:
        """A shallow copy (``payload`` and ``meta`` are shared); used to hand out leases."""
        return JobRecord(
            self.id,
            self.job_name,
            self.payload,
            self.queue,
            self.priority,
            self.attempts,
            self.max_retries,
            self.timeout,
            self.created_at,
            self.available_at,
            self.reserved_until,
            self.lease_token,
            self.unique_key,
            self.last_error,
            self.failed_at,
            self.meta,
            self.instance,
            self.v,
        )
