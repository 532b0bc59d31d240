"""The trainer's workbench trains a round on the share the job's label skew gives this host,
from the global adapter its announcement carries when it is small, and sends a small update
back inside its report."""

from __future__ import annotations

import time

from meshmind_fl_trainer._service import global_adapter
from meshmind_fl_trainer._work import Workbench

from meshmind.bus.protocol import INLINE_ADAPTER_BYTES, FlRoundAnnouncement
from meshmind.federation import HostData
from meshmind.fl import AdapterBlob, TaskSession, encode_adapter, inline_adapter

HOST = HostData(1, 5)


def announcement(label_skew: float | None) -> tuple[FlRoundAnnouncement, bytes]:
    blob = encode_adapter(TaskSession("digits", 0, HOST).initial)
    work = FlRoundAnnouncement(
        job_id="j",
        coordinator="n1",
        round=1,
        version=0,
        task="digits",
        adapter="jobs/j/global/0",
        sha256=blob.sha256,
        deadline=time.time() + 60,
        trainers=["n2"],
        epochs=1,
        lr=1e-2,
        proximal_mu=0.0,
        seed=0,
        label_skew=label_skew,
        max_update_norm=20.0,
    )
    return work, blob.data


def test_a_round_trains_on_the_share_of_the_jobs_label_skew() -> None:
    bench = Workbench(HOST)
    for label_skew in (None, 1000.0):
        work, adapter = announcement(label_skew)
        share = TaskSession("digits", 0, HOST, label_skew).data().train
        assert bench.train(work, adapter).examples == len(share)
    assert len(TaskSession("digits", 0, HOST, 1000.0).data().train) != len(
        TaskSession("digits", 0, HOST).data().train
    )


async def test_a_trainer_fetches_the_global_adapter_only_when_the_announcement_lacks_it() -> None:
    work, data = announcement(None)
    fetched: list[str] = []

    async def fetch(name: str) -> bytes:
        fetched.append(name)
        return data

    carried = work.model_copy(update={"adapter_data": data})
    assert await global_adapter(carried, fetch) == data
    assert fetched == []
    tampered = work.model_copy(update={"adapter_data": bytes([data[0] ^ 1]) + data[1:]})
    assert await global_adapter(tampered, fetch) == data  # a copy off its digest is not used
    assert await global_adapter(work, fetch) == data
    assert fetched == [work.adapter, work.adapter]


def test_only_a_small_adapter_travels_with_the_announcement() -> None:
    small = encode_adapter(TaskSession("digits", 0, HOST).initial)
    assert inline_adapter(small) == small.data
    large = AdapterBlob(data=bytes(INLINE_ADAPTER_BYTES + 1), sha256="0" * 64)
    assert inline_adapter(large) is None


def test_a_small_update_travels_in_its_report() -> None:
    work, adapter = announcement(None)
    trained = Workbench(HOST).train(work, adapter)
    assert trained.carried == trained.data
    assert len(trained.data) <= INLINE_ADAPTER_BYTES
