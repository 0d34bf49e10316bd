"""Jobs register themselves; the registry resolves names and never imports anything."""

from __future__ import annotations

import importlib
import sys
import textwrap
from typing import ClassVar

import pytest

from queuekit import JobRegistry, QueueJob, RegistryError, UnknownJobError, default_registry


class Renamed(QueueJob):
    job_name: ClassVar[str] = "tests.renamed.v2"
    job_aliases: ClassVar[tuple[str, ...]] = ("tests.renamed.v1",)

    async def handle(self) -> None:
        return None


def test_subclass_registers_under_module_and_qualname() -> None:
    class LocalJob(QueueJob):
        async def handle(self) -> None:
            return None

    assert LocalJob.job_name == f"{__name__}.{LocalJob.__qualname__}"
    assert default_registry.resolve(LocalJob.job_name) is LocalJob


def test_aliases_keep_renamed_jobs_resolving() -> None:
    assert default_registry.resolve("tests.renamed.v1") is Renamed
    assert default_registry.resolve("tests.renamed.v2") is Renamed
    assert {"tests.renamed.v1", "tests.renamed.v2"} <= set(default_registry.names())


def test_subclass_does_not_inherit_parent_job_name() -> None:
    class Child(Renamed):
        pass

    assert Child.job_name != Renamed.job_name
    assert default_registry.resolve("tests.renamed.v2") is Renamed


def test_two_classes_under_one_name_is_an_error_naming_both() -> None:
    class First(QueueJob):
        job_name: ClassVar[str] = "tests.clash"

    with pytest.raises(RegistryError) as info:

        class Second(QueueJob):
            job_name: ClassVar[str] = "tests.clash"

    message = str(info.value)
    assert "First" in message and "Second" in message and "tests.clash" in message


def test_redefining_the_same_class_replaces_it() -> None:
    def define() -> type[QueueJob]:
        class Again(QueueJob):
            job_name: ClassVar[str] = "tests.again"

        return Again

    first, second = define(), define()
    assert first is not second
    assert default_registry.resolve("tests.again") is second


def test_module_reload_replaces_its_classes(tmp_path, monkeypatch) -> None:
    (tmp_path / "reloadable_jobs.py").write_text(
        textwrap.dedent(
            """
            from queuekit import QueueJob

            class ReloadedJob(QueueJob):
                async def handle(self):
                    return None
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("reloadable_jobs")
    old = module.ReloadedJob
    module = importlib.reload(module)
    assert default_registry.resolve("reloadable_jobs.ReloadedJob") is module.ReloadedJob
    assert module.ReloadedJob is not old
    sys.modules.pop("reloadable_jobs", None)


def test_unknown_name_raises_and_imports_nothing() -> None:
    registry = JobRegistry()
    name = "os.system"  # an importable path must not be imported or called
    with pytest.raises(UnknownJobError, match=r"unknown job type 'os\.system'"):
        registry.resolve(name)
    assert name not in registry and len(registry) == 0


def test_own_registry_isolated_from_default() -> None:
    registry = JobRegistry()
    registry.register(Renamed)
    assert registry.names() == ["tests.renamed.v1", "tests.renamed.v2"]
