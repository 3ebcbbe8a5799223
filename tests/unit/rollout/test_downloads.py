"""The download estimate shown before an advance or a promotion, and its cost."""

import pytest

from rollout.downloads import bytes_text, downloads_estimate, money_text


def estimate(**given):
    options = {"arm": "challenger-1", "share_now": 500, "share_next": 2000, "arm_exposed": 100,
               "all_exposed": 2000, "model_bytes": 1_000_000}  # fmt: skip
    return downloads_estimate(**{**options, **given})


def test_estimate__from_the_arms_own_devices__scaled_by_the_added_share():
    result = estimate()

    assert result.devices == 300  # 100 at 5 %, so 300 more at 20 %
    assert result.total_bytes == 300_000_000
    assert result.cost(0.09) == pytest.approx(0.027)
    assert result.how.startswith("100 devices exposed to challenger-1 at 5 %")


def test_estimate__arm_not_exposed_yet__from_every_device_in_the_rollout():
    result = estimate(arm_exposed=0)

    assert result.devices == 300  # 2 000 times 15 %
    assert "2,000 devices exposed in this rollout" in result.how


def test_estimate__promotion_to_every_device():
    assert estimate(share_next=10_000).devices == 1900


def test_estimate__nothing_polled__no_number_and_says_so():
    result = estimate(arm_exposed=0, all_exposed=0)

    assert result.devices is None and result.total_bytes is None and result.cost(0.09) is None
    assert "nothing to estimate from" in result.how


def test_estimate__share_does_not_grow__nobody_downloads():
    result = estimate(share_next=500)

    assert result.devices == 0 and result.cost(0.09) == 0


@pytest.mark.parametrize(
    ("count", "text"),
    [(None, "\u2014"), (999, "999 bytes"), (1000, "1.0 kB"), (5_503_200, "5.5 MB"),
     (2 * 10**9, "2.0 GB"), (3 * 10**15, "3000.0 TB")],
)  # fmt: skip
def test_bytes_text(count, text):
    assert bytes_text(count) == text


@pytest.mark.parametrize(
    ("amount", "text"),
    [(None, "\u2014"), (0, "$0.00"), (0.004, "< $0.01"), (1234.5, "$1,234.50")],
)
def test_money_text(amount, text):
    assert money_text(amount) == text
