"""The dashboard's percentiles from log-scale histograms, against exact ones."""

import math
import random

from django_i3tasks import queries, stats


def _bins(values: list[float]) -> dict[int, int]:
    bins: dict[int, int] = {}
    for value in values:
        index = math.floor(math.log(max(value, 0.0005) / 0.001) * queries.LOG_BINS)
        bins[index] = bins.get(index, 0) + 1
    return bins


def test_binned_percentiles_stay_within_a_bin_of_the_exact_ones():
    rng = random.Random(3)
    for values in ([rng.expovariate(20) for _ in range(5000)],
                   [rng.lognormvariate(0, 2) for _ in range(999)],
                   [0.25] * 10 + [4.0], [0.0002] * 5):
        bins = _bins(values)
        for fraction in (0.5, 0.95):
            exact = stats.percentile(values, fraction)
            found = stats.binned_percentile(bins, fraction)
            assert exact is not None and found is not None
            if exact >= 0.001:
                assert abs(found / exact - 1) < 0.06, (fraction, exact, found)
            else:
                assert found == 0.0005


def test_binned_percentile_of_nothing_and_of_one_value():
    assert stats.binned_percentile({}, 0.5) is None
    assert stats.binned_percentile(_bins([2.0]), 0.95) == 0.001 * math.exp(
        (math.floor(math.log(2000) * queries.LOG_BINS) + 0.5) / queries.LOG_BINS)
