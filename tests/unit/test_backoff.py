"""The retry backoff: exponential, bounded, and with jitter within its bounds."""

from __future__ import annotations

from django_i3tasks.retry import backoff_seconds


def test_backoff_is_exponential_and_bounded(i3settings):
    i3settings(retry_backoff_min_seconds=2, retry_backoff_max_seconds=10)
    assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 10]


def test_backoff_with_jitter_stays_within_the_bounds():
    from django_i3tasks import outbox

    with outbox.use(outbox.PubSubOutbox()):
        assert backoff_seconds(1, (2, 100), jitter=True, rand=lambda: 0.0) == 2  # clamped
        assert backoff_seconds(3, (2, 100), jitter=True, rand=lambda: 0.0) == 6  # 8 * 0.75
        assert backoff_seconds(3, (2, 100), jitter=True, rand=lambda: 1.0) == 10  # 8 * 1.25
        assert backoff_seconds(9, (2, 100), jitter=True, rand=lambda: 1.0) == 100  # capped
        assert backoff_seconds(30000, (2, 100)) == 100
        delays = {backoff_seconds(4, (1, 1000), jitter=True) for _ in range(50)}
        assert len(delays) > 1 and all(6 <= d <= 10 for d in delays)
