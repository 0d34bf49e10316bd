"""Config validation names the dotted key at fault."""

from __future__ import annotations

import pytest

from queuekit import ConfigError, QueueConfig, QueueManager
from queuekit.drivers.memory import MemoryDriver


def test_no_config_means_memory() -> None:
    manager = QueueManager()
    assert manager.default_driver_name == "memory"
    assert isinstance(manager.driver, MemoryDriver)


def test_unknown_driver_lists_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        QueueManager({"queue": {"driver": "mem"}})
    message = str(info.value)
    assert message.startswith("queue.driver: unknown driver 'mem'; known: ")
    for name in ("database", "file", "memory", "redis", "sync"):
        assert name in message


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"queue": {"worker": {"concurrency": 0}}}, "queue.worker.concurrency"),
        ({"queue": {"worker": {"delay": -1}}}, "queue.worker.delay"),
        ({"queue": {"worker": {"idle_wait": "soon"}}}, "queue.worker.idle_wait"),
        ({"queue": {"worker": {"colour": 1}}}, "queue.worker.colour"),
        ({"queue": {"default_queue": ""}}, "queue.default_queue"),
        ({"queue": "memory"}, "queue"),
    ],
)
def test_invalid_values_name_their_key(config: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        QueueManager(config)
    assert str(info.value).startswith(f"{key}: ")


def test_driver_section_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"^queue\.memory: expected a mapping"):
        QueueManager({"queue": {"driver": "memory", "memory": 5}})


def test_driver_section_reaches_the_factory() -> None:
    manager = QueueManager({"queue": {"driver": "memory", "memory": {"retry_after": 12}}})
    assert manager.driver.default_lease == 12.0


def test_pydantic_model_accepted_and_extra_top_level_keys_ignored() -> None:
    config = QueueConfig.parse({"app": {"debug": True}, "queue": {"driver": "sync"}})
    assert QueueManager(config).default_driver_name == "sync"


def test_worker_defaults_come_from_config() -> None:
    config = QueueConfig.parse({"queue": {"worker": {"concurrency": 3, "grace": 5}}})
    assert config.queue.worker.concurrency == 3 and config.queue.worker.grace == 5.0


def test_memory_options_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"^queue\.memory\.retry_after: "):
        QueueManager({"queue": {"memory": {"retry_after": 0}}})
    with pytest.raises(ConfigError, match=r"^queue\.sync\.colour: "):
        QueueManager({"queue": {"driver": "sync", "sync": {"colour": "red"}}})
