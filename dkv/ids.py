# test-case-name: tests.test_etcd_api
"""etcd's numeric ids for dkv's string ids.

etcd names members and clusters with uint64s; dkv with strings (the member
id of ``--node-id``, the cluster id derived from the bootstrap members). Both
numbers are derived, the same on every node and stable for life: a member's
is the first 8 bytes of SHA-256 of its id, big-endian (never 0, which etcd
reads as "none"); a cluster's is its 16-hex-digit id read as a number.
"""

from __future__ import annotations

import functools
import hashlib


@functools.lru_cache(maxsize=256)  # every answer's header names its member
def member_id(node_id: str) -> int:
    number = int.from_bytes(hashlib.sha256(node_id.encode()).digest()[:8], "big")
    return number or 1


@functools.lru_cache(maxsize=16)
def cluster_number(cluster_id: str) -> int:
    try:
        return int(cluster_id, 16) & 0xFFFF_FFFF_FFFF_FFFF
    except ValueError:
        return int.from_bytes(hashlib.sha256(cluster_id.encode()).digest()[:8], "big")
