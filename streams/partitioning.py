"""Which partition a user's events belong to: Kafka's default partitioner, murmur2 of the key.

Producers key events by the user id as decimal text, so all of a user's events land in one
partition and one worker sessionizes that user without repartitioning. The worker checks the
rule for every event; this is the one implementation of it.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["partition_for_user"]


def _murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as an unsigned 32-bit int.

    Written out rather than imported from aiokafka's partitioner, whose `murmur2` is not public
    API; it is the same algorithm, and tests pin it to Kafka's own test vectors.
    """
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    full = length - length % 4
    for i in range(0, full, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length - full
    if rest:
        if rest == 3:
            h ^= data[full + 2] << 16
        if rest >= 2:
            h ^= data[full + 1] << 8
        h ^= data[full]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


@lru_cache(maxsize=1 << 17)
def _user_hash(user_id: int) -> int:
    """toPositive(murmur2(decimal key)), cached: a worker sees the same users over and over."""
    return _murmur2(str(user_id).encode()) & 0x7FFFFFFF


def partition_for_user(user_id: int, num_partitions: int) -> int:
    """The partition Kafka's default partitioner (Java, aiokafka) picks for key `str(user_id)`."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    return _user_hash(user_id) % num_partitions
