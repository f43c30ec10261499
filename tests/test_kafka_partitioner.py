"""Our partitioner hashes keys exactly as aiokafka's default partitioner (and Kafka's) does."""

from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given
from hypothesis import strategies as st

from onefunnel.shared.bus import kafka_partitioner


@given(key=st.binary(max_size=300), partitions=st.integers(min_value=1, max_value=64))
def test_every_key_gets_aiokafkas_hash_and_partition(key: bytes, partitions: int) -> None:
    ordered = list(range(partitions))
    assert kafka_partitioner.murmur2(key) == murmur2(key)
    assert kafka_partitioner.partition_for(key, ordered) == DefaultPartitioner()(key, ordered, ordered)


def test_keys_of_every_length_modulo_four_hash_as_kafka_does() -> None:
    vectors = {
        # Kafka's own: clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2.
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
        # Lengths 1 and 5, as Akka's Murmur2Spec has them from Kafka's implementation.
        b"1": -1993445489,
        b"12345": -1188365604,
    }
    assert {len(key) % 4 for key in vectors} == {0, 1, 2, 3}
    for key, signed in vectors.items():
        assert kafka_partitioner.murmur2(key) == signed & 0xFFFFFFFF, key
