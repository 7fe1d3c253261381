"""The node driver: ``ReplicationService`` and the parts it wires (see ``service``)."""

from dkv.replication.service import DriverConfig, ReplicationService
from dkv.replication.snapshot_shipping import SnapshotSender

__all__ = ["DriverConfig", "ReplicationService", "SnapshotSender"]
