import numpy as np
import pytest

from barapi.errors import ConfigError
from barapi.labelmap import LabelMap, frequency_map, random_map


def test_each_class_averages_only_its_own_source_labels() -> None:
    n_sources = 12
    label_map = LabelMap(np.array([[0, 5, 7], [1, 2, 11]]), n_sources)
    for source in range(n_sources):
        probs = np.full((1, n_sources), 1e-3)
        probs[0, source] = 1.0
        h = label_map.scores(probs)[0]
        owner = [j for j, group in enumerate(label_map.assignment) if source in group]
        if owner:
            assert h.argmax() == owner[0] and h[owner[0]] > 0.9
        else:
            assert h == pytest.approx([0.5, 0.5])
    probs = np.arange(n_sources, dtype=float)[None] / 100
    raw = [probs[0, [0, 5, 7]].mean(), probs[0, [1, 2, 11]].mean()]
    assert label_map.scores(probs)[0] == pytest.approx(np.array(raw) / sum(raw))


def test_random_map_is_disjoint_and_seeded() -> None:
    a = random_map(10, 4, 1000, seed=3)
    assert a.assignment.shape == (10, 4) and len(np.unique(a.assignment)) == 40
    assert np.array_equal(a.assignment, random_map(10, 4, 1000, seed=3).assignment)


def test_frequency_map_follows_the_histogram_of_predictions() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.full((6, 6), 0.01)
    probs[[0, 1, 2], 4] = 0.9  # class 0 is mostly predicted as source 4
    probs[[3, 4], 2] = 0.9  # class 1 as source 2 ...
    probs[5, 4] = 0.9  # ... once as 4, which class 0 owns more strongly
    label_map = frequency_map(probs, labels, 2, m=1)
    assert label_map.assignment.tolist() == [[4], [2]]


def test_too_many_source_labels_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="exceeds the black box's 5 source labels"):
        random_map(3, 2, 5, seed=0)


def test_overlapping_groups_are_refused() -> None:
    with pytest.raises(ValueError, match="two target classes"):
        LabelMap(np.array([[0, 1], [1, 2]]), 4)
