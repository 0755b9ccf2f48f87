"""FedAvg (McMahan et al. 2017): example-weighted, streamed, float64-accumulated; FedSGD's server step."""

from __future__ import annotations

import pytest
import torch

from fedvit_utils.federated.aggregation import NoClientUpdates, fedavg, is_finite_state
from fedvit_utils.federated.strategies import apply_gradient


def _state(w, b, steps=0):
    return {"w": torch.tensor(w, dtype=torch.float32), "b": torch.tensor(b, dtype=torch.float32),
            "steps": torch.tensor(steps)}


def test_weighted_mean_by_example_counts():
    out = fedavg([_state([1.0, 2.0], 0.0, 1), _state([5.0, 6.0], 4.0, 4)], [1, 3])
    torch.testing.assert_close(out["w"], torch.tensor([4.0, 5.0]))
    assert out["b"].item() == 3.0 and out["w"].dtype == torch.float32
    assert out["steps"].dtype == torch.int64 and out["steps"].item() == 3  # round(0.25 + 3)


def test_identical_states_come_back_unchanged():
    s = {"w": torch.randn(7, 5), "h": torch.randn(3).to(torch.bfloat16)}
    out = fedavg([s, {k: v.clone() for k, v in s.items()}, s], [5000, 5000, 4000])
    assert torch.equal(out["w"], s["w"]) and torch.equal(out["h"], s["h"]) and out["h"].dtype == torch.bfloat16


def test_streams_pairs_from_a_generator_one_at_a_time():
    # One buffer, overwritten in place before each yield (as a client reusing its memory would): only a
    # fedavg that folds each update in before pulling the next gets the mean of 0..9; one that first
    # collects the iterator would average ten views of the last update (9.0).
    shared = {"w": torch.zeros(3)}
    pulled = []

    def updates():
        for i in range(10):
            pulled.append(i)
            shared["w"].fill_(float(i))
            yield shared, 1

    out = fedavg(updates())
    assert pulled == list(range(10))
    torch.testing.assert_close(out["w"], torch.full((3,), 4.5))
    assert out["w"] is not shared["w"]


def test_low_precision_states_come_back_in_their_dtype():
    for dtype in (torch.float16, torch.bfloat16):
        a, b = torch.tensor([1.0, 2.0], dtype=dtype), torch.tensor([2.0, 4.0], dtype=dtype)
        out = fedavg([({"w": a}, 1), ({"w": b}, 1)])
        assert out["w"].dtype == dtype and torch.equal(out["w"], torch.tensor([1.5, 3.0], dtype=dtype))


def test_accumulates_in_float64():
    # 1e8 + 1 is not representable in float32 (spacing 8); the float64 mean of the ten is exact.
    states = [{"w": torch.tensor([1e8], dtype=torch.float32)}] + [{"w": torch.tensor([1.0])}] * 9
    naive = torch.zeros(1)
    for s in states:
        naive += s["w"] * 0.1
    out = fedavg(states, [1] * 10)
    assert out["w"].item() == pytest.approx(1e7 + 0.9, abs=1.0)
    assert out["w"].item() == torch.tensor([1e7 + 0.9], dtype=torch.float32).item()
    assert naive.item() != out["w"].item()


def test_bad_updates_are_named():
    with pytest.raises(ValueError, match="different keys"):
        fedavg([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}], [1, 1])
    with pytest.raises(ValueError, match="shape"):
        fedavg([{"a": torch.zeros(2)}, {"a": torch.zeros(3)}], [1, 1])
    with pytest.raises(ValueError, match="must be > 0"):
        fedavg([{"a": torch.zeros(1)}], [0])
    with pytest.raises(NoClientUpdates, match="no client states"):
        fedavg([], [])
    with pytest.raises(TypeError, match="pairs"):
        fedavg([{"a": torch.zeros(1)}])


def test_finite_check_and_fedsgd_server_step():
    assert is_finite_state({"a": torch.ones(2), "n": torch.tensor(3)})
    assert not is_finite_state({"a": torch.tensor([1.0, float("nan")])})
    model = torch.nn.Linear(2, 1)
    before = model.weight.detach().clone()
    grads = {"weight": torch.ones(1, 2), "bias": torch.ones(1)}
    apply_gradient(model, grads, torch.optim.SGD(model.parameters(), lr=0.5))
    torch.testing.assert_close(model.weight.detach(), before - 0.5)
    with pytest.raises(ValueError, match="lacks"):
        apply_gradient(model, {"weight": torch.ones(1, 2)}, torch.optim.SGD(model.parameters(), lr=0.5))
