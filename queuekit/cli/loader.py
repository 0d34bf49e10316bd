"""Finding the application's ``QueueManager``: ``module:attribute``, or ``--config`` with
``--import``."""

from __future__ import annotations

import importlib
import json
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..manager import QueueManager

__all__ = ["CliError", "load_manager", "read_config"]


class CliError(Exception):
    """A command cannot run as asked (bad APP, unreadable config); exit code 2."""


# -- finding the application's QueueManager ----------------------------------------------


def load_manager(
    app: str | None, config: str | None = None, imports: Sequence[str] = ()
) -> QueueManager:
    """The ``QueueManager`` a command works on: from ``APP`` or from ``--config`` + ``--import``.

    ``imports`` are imported first, so the job classes they define are registered before a
    worker meets their records. Raises ``CliError`` saying what was expected and what was found.
    """
    # A console script does not put the working directory on sys.path the way ``python -m``
    # does; without it ``queuekit worker app:manager`` could not find ./app.py.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in imports:
        _import(module, what=f"--import {module}")
    if app is not None and config is not None:
        raise CliError(f"give APP or --config, not both (got APP {app!r} and --config {config!r})")
    if config is not None:
        return QueueManager(read_config(config))
    if app is None:
        raise CliError("no queue named: give APP as module:attribute, or --config FILE")
    return _manager_from_app(app)


def _import(module: str, *, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CliError(f"{what}: cannot import module {module!r}: {e}") from e


def _manager_from_app(app: str) -> QueueManager:
    module_name, sep, attribute = app.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(
            f"APP must look like 'module:attribute' (e.g. myapp.queue:manager), got {app!r}"
        )
    target: Any = _import(module_name, what=f"APP {app!r}")
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"APP {app!r}: {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(target, QueueManager):
        return target
    if callable(target):
        made = target()
        if isinstance(made, QueueManager):
            return made
        raise CliError(
            f"APP {app!r}: calling it returned {type(made).__name__}, not a QueueManager"
        )
    raise CliError(
        f"APP {app!r} is a {type(target).__name__}, not a QueueManager "
        "(or a zero-argument callable returning one)"
    )


def read_config(path: str) -> dict[str, Any]:
    """The config dict in ``path``: TOML when the name ends in ``.toml``, JSON otherwise."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as e:
        raise CliError(f"--config {path}: cannot read it: {e.strerror or e}") from e
    try:
        if file.suffix.lower() == ".toml":
            config = tomllib.loads(data.decode("utf-8"))
        else:
            config = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        kind = "TOML" if file.suffix.lower() == ".toml" else "JSON"
        raise CliError(f"--config {path}: not valid {kind}: {e}") from e
    if not isinstance(config, dict):
        raise CliError(
            f"--config {path}: expected an object at the top, found {type(config).__name__}"
        )
    return config


# -- output helpers ----------------------------------------------------------------------
