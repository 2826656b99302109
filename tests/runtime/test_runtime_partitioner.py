"""The producer's partitioner puts every key on the partition aiokafka's default (Kafka's murmur2) does."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference_murmur2
from fte_runtime.kafka import key_partitioner, murmur2


def test_murmur2_matches_the_reference_for_every_tail_length() -> None:
    rng = random.Random(11)
    for length in range(70):
        for _ in range(50):
            data = rng.randbytes(length)
            assert murmur2(data) == reference_murmur2(data), data


def test_keys_land_on_the_default_partitioners_partition() -> None:
    rng = random.Random(5)
    default = DefaultPartitioner()
    keys = [b"whatsapp:+14155550100", b"email:ada@example.com", "email:zoë@example.com".encode()]
    keys += [rng.randbytes(rng.randint(1, 40)) for _ in range(2000)]
    for key in keys:
        partitions = list(range(rng.randint(1, 12)))
        assert key_partitioner(key, partitions, partitions) == default(key, partitions, partitions)
    # No key: any available partition, as the default does.
    assert key_partitioner(None, [0, 1, 2], [1]) == 1
