"""SPU storage: one directory of memory-mapped segments per replica (no sockets here).

``PartitionLog`` is the class the SPU uses; the checkpoint helpers serve its small files.
"""

from .checkpoint import LeaderEpochCache, read_checkpoint, write_atomic, write_checkpoint
from .log import PartitionLog
from .recovery import RecoveryCut

__all__ = [
    "LeaderEpochCache",
    "PartitionLog",
    "RecoveryCut",
    "read_checkpoint",
    "write_atomic",
    "write_checkpoint",
]
