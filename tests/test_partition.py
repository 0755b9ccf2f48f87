"""Client partitions: the paper's class-balanced IID split, Dirichlet label skew, records and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedvit_utils.partition import ClientSplits, class_counts, load_splits, partition, save_splits
from fedvit_utils.study.figures import class_counts_figure

LABELS = np.repeat(np.arange(10), 5000)  # CIFAR-10's training label histogram


def test_paper_split_is_exactly_balanced_disjoint_and_covering():
    clients = partition(LABELS, 10, "iid", 5000, seed=0)
    counts = class_counts(clients, LABELS, 10)
    assert (counts == 500).all()
    joined = np.concatenate(clients)
    assert len(np.unique(joined)) == len(joined) == 50_000


def test_partition_is_seeded():
    a, b = partition(LABELS, 10, "iid", 1000, seed=3), partition(LABELS, 10, "iid", 1000, seed=3)
    c = partition(LABELS, 10, "iid", 1000, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_is_label_skewed_and_disjoint():
    clients = partition(LABELS, 10, "dirichlet", 2000, alpha=0.1, seed=0)
    counts = class_counts(clients, LABELS, 10)
    assert (counts.sum(1) == 2000).all()
    assert (counts.max(1) / 2000).mean() > 0.5  # IID would be 0.1
    joined = np.concatenate(clients)
    assert len(np.unique(joined)) == len(joined)


def test_bad_requests_say_what_to_change():
    with pytest.raises(ValueError, match="lower samples_per_client"):
        partition(LABELS, 10, "iid", 6000)
    with pytest.raises(ValueError, match="not a multiple of the 10 classes"):
        partition(LABELS, 10, "iid", 1005)
    with pytest.raises(ValueError, match="needs alpha"):
        partition(LABELS, 10, "dirichlet", 100)
    with pytest.raises(ValueError, match="unknown scheme"):
        partition(LABELS, 10, "round-robin")


def test_record_round_trip_and_plot(tmp_path):
    clients = partition(LABELS, 4, "iid", 100, seed=1)
    test_labels = np.repeat(np.arange(10), 100)
    tests = partition(test_labels, 4, "iid", 20, seed=2)
    splits = ClientSplits(clients, tests, {"partition_seed": 1}, 10)
    path = save_splits(tmp_path / "p.json", splits, LABELS, test_labels)
    splits = load_splits(path)
    assert splits.settings == {"partition_seed": 1} and splits.num_classes == 10
    assert all(np.array_equal(a, b) for a, b in zip(splits.train, clients, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(splits.test, tests, strict=True))
    assert all(c.dtype == np.int64 for c in splits.train)
    counts = json.loads(path.read_text())["content"]["splits"]["train"]["class_counts"]
    assert counts == class_counts(splits.train, LABELS, 10).tolist() == [[10] * 10] * 4
    fig = class_counts_figure(class_counts(clients, LABELS, 10), [str(i) for i in range(10)])
    assert len(fig.axes[0].containers) == 10


def test_non_iid_test_split_follows_each_clients_class_mix():
    from fedvit_utils.partition import partition_like

    train = partition(LABELS, 10, "dirichlet", 2000, alpha=0.1, seed=0)
    mix = class_counts(train, LABELS, 10)
    test_labels = np.repeat(np.arange(10), 1000)
    test = partition_like(test_labels, mix, 200, seed=1)
    test_mix = class_counts(test, test_labels, 10)
    assert (test_mix.sum(1) == 200).all()
    assert (test_mix.argmax(1) == mix.argmax(1)).all()
    assert np.abs(test_mix / 200 - mix / 2000).max() < 0.05
    joined = np.concatenate(test)
    assert len(np.unique(joined)) == len(joined)
