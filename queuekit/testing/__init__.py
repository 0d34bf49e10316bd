"""Test tools for queuekit and for authors of custom drivers.

- ``DriverContract``: the driver contract suite (pytest); see ``queuekit.testing.contract``.
- ``queuekit.testing.multiprocess``: many worker processes on one store, and crash tests.
"""

from .contract import DriverContract, make_record
from .jobs import AlwaysFails, ContractJob, ProbeJob

__all__ = ["AlwaysFails", "ContractJob", "DriverContract", "ProbeJob", "make_record"]
