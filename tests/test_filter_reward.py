"""The learnability reward of DESIGN 3.3 on hand values."""

import numpy as np

from fedlada.filter import learnability_reward


def test_reward_hand_values_clipping_and_missing_targets():
    before = np.array([2.0, 2.0, 1.0, 0.5, 2.0, 0.0, -1.0, np.nan, 1.0])
    after = np.array([1.0, 0.0, 1.5, -0.5, 1.5, 0.2, -2.0, 1.0, 0.5])
    has = np.array([True, True, True, True, False, True, True, False, True])
    expected = [0.5, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5]
    # 0.5: halved; 1.0: to zero; 0.0: got worse (clipped); 1.0: ratio 2 clipped; 0: no target;
    # 0: before = 0 and before < 0 (nothing to learn); 0: NaN NLL of a row without target
    np.testing.assert_allclose(learnability_reward(before, after, has), expected)
