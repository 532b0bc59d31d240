"""The digits task: central training, federated rounds on non-IID hosts, attacks, adapters."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch

from meshmind.federation import HostData
from meshmind.fl import (
    AdapterCorrupt,
    DigitsTask,
    FedAvg,
    Krum,
    Params,
    Strategy,
    TaskSession,
    TrimmedMean,
    Update,
    UpdateRejected,
    create_task,
    decode_adapter,
    encode_adapter,
    l2_norm,
    load_trainable,
    register_task,
    task_names,
    task_options,
    trainable_params,
    validate_update,
)
from meshmind.fl._params import subtract

HOSTS = 5
MODEL_SEED = 1
PARTITION_SEED = 0
EPOCHS = 2
LR = 1e-2


@pytest.fixture(scope="module")
def task() -> DigitsTask:
    return DigitsTask()


def local_updates(task: DigitsTask, global_params: Params) -> list[Update]:
    """Every host trains the global adapter on its own share and reports it."""
    model = task.build_model(MODEL_SEED)
    updates = []
    for node in range(HOSTS):
        load_trainable(model, global_params)
        data = task.local_data(node, HOSTS, PARTITION_SEED).train
        result = task.train(model, data, epochs=EPOCHS, lr=LR)
        assert result.examples == len(data)
        assert math.isfinite(result.loss)
        updates.append(Update(trainable_params(model), examples=result.examples))
    return updates


def accuracy(task: DigitsTask, params: Params) -> float:
    model = task.build_model(MODEL_SEED)
    load_trainable(model, params)
    return task.evaluate(model, task.central_data().test)["accuracy"]


@pytest.fixture(scope="module")
def first_round(task: DigitsTask) -> tuple[Params, list[Update]]:
    start = trainable_params(task.build_model(MODEL_SEED))
    return start, local_updates(task, start)


def test_registry_finds_the_built_in_tasks_by_name() -> None:
    assert {"digits", "minilm-text"} <= set(task_names())
    assert isinstance(create_task("digits", alpha=0.1), DigitsTask)
    with pytest.raises(KeyError, match="unknown task 'nope'; known: digits"):
        create_task("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_task("digits", DigitsTask)


def test_hosts_hold_disjoint_label_skewed_shares(task: DigitsTask) -> None:
    shares = [task.local_data(node, HOSTS, PARTITION_SEED).train for node in range(HOSTS)]
    rows = [tuple(map(tuple, share.inputs["x"].tolist())) for share in shares]
    assert sum(len(r) for r in rows) == len(task.central_data().train)
    for share in shares:
        counts = Counter(share.labels.tolist())
        # Label skew: each host's most common class is well over the uniform 10 %.
        assert max(counts.values()) / len(share) > 0.2
    again = task.local_data(2, HOSTS, PARTITION_SEED).train
    assert torch.equal(again.labels, shares[2].labels)


def test_a_job_sets_the_label_skew_of_the_hosts_shares() -> None:
    def largest_class_share(label_skew: float | None) -> float:
        session = TaskSession("digits", PARTITION_SEED, HostData(0, HOSTS), label_skew)
        counts = Counter(session.data().train.labels.tolist())
        return max(counts.values()) / sum(counts.values())

    assert largest_class_share(None) > 0.2  # the task's own skew (0.5)
    assert largest_class_share(1000.0) < 0.13  # near even: 10 classes of about 10 % each
    with pytest.raises(ValueError, match="label_skew applies to digits"):
        task_options("minilm-text", HostData(0, HOSTS), 5.0)


def test_training_centrally_reaches_95_percent(task: DigitsTask) -> None:
    model = task.build_model(MODEL_SEED)
    data = task.central_data()
    base = task.evaluate(model, data.test)["accuracy"]
    result = task.train(model, data.train, epochs=5, lr=LR)
    after = task.evaluate(model, data.test)
    assert result.metrics["train_accuracy"] > 0.8
    assert base < 0.9
    assert after["accuracy"] >= 0.95
    assert after["loss"] < 0.3


def test_three_fedavg_rounds_on_non_iid_hosts_improve_accuracy_each_round(
    task: DigitsTask, first_round: tuple[Params, list[Update]]
) -> None:
    global_params, updates = first_round
    history = [accuracy(task, global_params)]
    for round_number in range(3):
        if round_number > 0:
            updates = local_updates(task, global_params)
        global_params = FedAvg().aggregate(global_params, updates)
        history.append(accuracy(task, global_params))
    assert all(later > earlier for earlier, later in itertools.pairwise(history)), history
    assert history[-1] >= history[0] + 0.04


def test_fedprox_keeps_a_host_closer_to_the_global_model(task: DigitsTask) -> None:
    model = task.build_model(MODEL_SEED)
    start = trainable_params(model)
    data = task.local_data(0, HOSTS, PARTITION_SEED).train
    task.train(model, data, epochs=EPOCHS, lr=LR)
    plain = l2_norm(subtract(trainable_params(model), start))
    load_trainable(model, start)
    task.train(model, data, epochs=EPOCHS, lr=LR, proximal_mu=1.0, global_params=start)
    proximal = l2_norm(subtract(trainable_params(model), start))
    assert proximal < 0.8 * plain


def test_a_nan_update_is_rejected_and_the_round_goes_on(
    task: DigitsTask, first_round: tuple[Params, list[Update]]
) -> None:
    global_params, updates = first_round
    poisoned = {name: tensor.clone() for name, tensor in updates[4].params.items()}
    next(iter(poisoned.values()))[0, 0] = math.nan
    reasons = []
    accepted = []
    for params in [*[u.params for u in updates[:4]], poisoned]:
        try:
            validate_update(global_params, params, max_update_norm=20.0)
        except UpdateRejected as rejection:
            reasons.append(rejection.reason)
            continue
        accepted.append(Update(params, examples=100))
    assert len(accepted) == 4
    assert len(reasons) == 1
    assert "1 non-finite values" in reasons[0]
    assert accuracy(task, FedAvg().aggregate(global_params, accepted)) > accuracy(
        task, global_params
    )


@pytest.mark.parametrize(
    "strategy", [TrimmedMean(beta=0.2), Krum(byzantine=1), Krum(byzantine=1, keep=3)]
)
def test_a_hugely_scaled_update_is_outvoted_and_accuracy_holds(
    task: DigitsTask, first_round: tuple[Params, list[Update]], strategy: Strategy
) -> None:
    global_params, updates = first_round
    scaled = {
        name: global_params[name] + 100.0 * (tensor - global_params[name])
        for name, tensor in updates[4].params.items()
    }
    attacked = [*updates[:4], Update(scaled, examples=updates[4].examples)]
    # FedAvg lets the attacker ruin the model; the norm bound would have refused it.
    assert accuracy(task, FedAvg().aggregate(global_params, attacked)) < 0.5
    with pytest.raises(UpdateRejected, match="exceeds the bound"):
        validate_update(global_params, scaled, max_update_norm=20.0)
    clean = accuracy(task, strategy.aggregate(global_params, updates))
    robust = accuracy(task, strategy.aggregate(global_params, attacked))
    assert robust >= clean - 0.02
    assert robust >= 0.75
    if isinstance(strategy, Krum):
        scores = strategy.scores(attacked)
        assert scores.index(max(scores)) == 4


def test_an_adapter_travels_as_bytes_with_its_digest(
    task: DigitsTask, first_round: tuple[Params, list[Update]]
) -> None:
    params = first_round[1][0].params
    blob = encode_adapter(params)
    loaded = decode_adapter(blob.data, blob.sha256)
    assert all(torch.equal(loaded[name], params[name]) for name in params)
    assert accuracy(task, loaded) == accuracy(task, params)
    tampered = bytearray(blob.data)
    tampered[-1] ^= 0xFF
    with pytest.raises(AdapterCorrupt, match="digest mismatch"):
        decode_adapter(bytes(tampered), blob.sha256)
