"""The stored form: every field written, exact round trip, clear errors on damage."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queuekit import CorruptStoreError, JobRecord
from queuekit.record import RECORD_VERSION

FIELDS = {
    "v",
    "id",
    "job_name",
    "payload",
    "queue",
    "priority",
    "attempts",
    "max_retries",
    "timeout",
    "created_at",
    "available_at",
    "reserved_until",
    "lease_token",
    "unique_key",
    "last_error",
    "failed_at",
    "meta",
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
instants = st.floats(min_value=0, max_value=4e9, allow_nan=False)

records = st.builds(
    JobRecord,
    id=st.text(min_size=1, max_size=36),
    job_name=st.text(min_size=1, max_size=40),
    payload=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    queue=st.text(min_size=1, max_size=10),
    priority=st.integers(-1000, 1000),
    attempts=st.integers(0, 100),
    max_retries=st.integers(0, 100),
    timeout=st.none() | st.floats(min_value=0, max_value=1e6),
    created_at=instants,
    available_at=instants,
    reserved_until=st.none() | instants,
    lease_token=st.none() | st.text(min_size=1, max_size=16),
    unique_key=st.none() | st.text(max_size=16),
    last_error=st.none() | st.text(max_size=50),
    failed_at=st.none() | instants,
    meta=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)


@given(records)
def test_json_round_trip_is_exact(record: JobRecord) -> None:
    data = json.loads(record.dumps())
    assert set(data) == FIELDS
    again = JobRecord.from_json(data)
    assert again.to_json() == record.to_json()


def test_defaults_are_written_too() -> None:
    data = JobRecord(id="1", job_name="j", payload={}).to_json()
    assert set(data) == FIELDS
    assert data["v"] == RECORD_VERSION and data["reserved_until"] is None and data["meta"] == {}


def test_missing_field_is_named() -> None:
    data = JobRecord(id="1", job_name="j", payload={}).to_json()
    del data["queue"]
    with pytest.raises(CorruptStoreError, match=r"jobs\.json line 3: field 'queue' is missing"):
        JobRecord.from_json(data, source="jobs.json line 3")


def test_wrong_type_is_named() -> None:
    data = JobRecord(id="1", job_name="j", payload={}).to_json()
    data["attempts"] = "2"
    with pytest.raises(CorruptStoreError, match="field 'attempts' should be int, found str"):
        JobRecord.from_json(data)


def test_unknown_version_is_refused() -> None:
    data = JobRecord(id="1", job_name="j", payload={}).to_json()
    data["v"] = 99
    with pytest.raises(CorruptStoreError, match="unsupported record format version 99"):
        JobRecord.from_json(data)


def test_bad_json_names_the_source() -> None:
    with pytest.raises(CorruptStoreError, match=r"^row 7: not valid JSON"):
        JobRecord.loads('{"v": 1,', source="row 7")
