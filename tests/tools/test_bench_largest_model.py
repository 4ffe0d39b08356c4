"""tools/bench/largest_model.py's arithmetic against hand-computed numbers: the Llama family's
parameter count, the least-squares fit of bytes on parameters, and the largest size under a budget.
(The measuring runs themselves take minutes and are not run here: docs/performance.md.)"""

from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, os.path.join(REPO, "tools", "bench"))
import largest_model as lm  # noqa: E402

# hidden h, h/64 layers, intermediate 4h, vocabulary 40, untied: h^3/4 + h^2/32 + 81h
HAND = {64: 65536 + 128 + 5184, 128: 524288 + 512 + 10368, 192: 1769472 + 1152 + 15552}


def test_family_params_by_hand():
    assert lm.shape(768) == (768, 12, 3072)
    for h, n in HAND.items():
        assert lm.params(h, 40) == n
        assert lm.vocab_of(n, h) == 40
    assert lm.params(768, 36) == 113_320_704  # memory.py's default on configs/tiny.yaml (32 words + 4 specials)
    with pytest.raises(ValueError):
        lm.shape(100)
    with pytest.raises(ValueError):
        lm.vocab_of(HAND[64] + 1, 64)


def test_fit_by_hand():
    a, b = lm.fit([(10, 120.0), (20, 220.0), (30, 320.0)])  # exactly 20 + 10 x
    assert (a, b) == pytest.approx((20.0, 10.0))
    a, b = lm.fit([(0, 1.0), (1, 2.0), (2, 5.0)])  # least squares: mean x 1, mean y 8/3, slope 4/2
    assert (a, b) == pytest.approx((8 / 3 - 2.0, 2.0))
    with pytest.raises(ValueError):
        lm.fit([(10, 1.0), (10, 2.0)])


def test_largest_fitting_by_hand():
    a, b = 1000.0, 10.0
    at = {h: a + b * n for h, n in HAND.items()}  # 709480, 5352680, 17862760 bytes
    assert lm.largest_fitting(a, b, 10_000_000, 40, max_hidden=192) == 128
    assert lm.largest_fitting(a, b, at[128], 40, max_hidden=192) == 128  # fits exactly
    assert lm.largest_fitting(a, b, at[128] - 1, 40, max_hidden=192) == 64
    assert lm.largest_fitting(a, b, at[192], 40, max_hidden=192) == 192
    assert lm.largest_fitting(a, b, at[64] - 1, 40) is None
