"""The contract of labs that also carry the tests' own subjects and stores: the product's,
plus the echo service, its pings and the buckets bus tests create, so that those labs run
secure too, with permissions generated as the product's are."""

from __future__ import annotations

from meshmind.bus import Contract, StoreKind
from meshmind.bus.protocol import CONTRACT
from tests.kit.echo import TEST_CONTRACT

TEST_BUCKETS = (
    "test-absent",
    "test-as-is",
    "test-cut",
    "test-drift",
    "test-empty",
    "test-gen",
    "test-in-memory",
    "test-leftovers",
    "test-lost",
    "test-one-replica",
    "test-owner",
    "test-peers",
    "test-replaying",
    "test-traced",
    "test-values",
)
TEST_OBJECT_STORES = ("test-blobs", "test-rate")


def _lab_contract() -> Contract:
    contract = Contract(
        events=[*CONTRACT.events, *TEST_CONTRACT.events],
        endpoints=[*CONTRACT.endpoints, *TEST_CONTRACT.endpoints],
        buckets=list(CONTRACT.buckets),
        shared=list(CONTRACT.shared),
    )
    for bucket in TEST_BUCKETS:
        contract.shared_store(bucket, StoreKind.KV, "A bucket a bus test creates.")
    for store in TEST_OBJECT_STORES:
        contract.shared_store(store, StoreKind.OBJECTS, "An object store a bus test creates.")
    return contract


LAB_CONTRACT = _lab_contract()
