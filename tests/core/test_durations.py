import pytest

from mailwatch.core.durations import human_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "<1m"),
        (59, "<1m"),
        (45 * 60, "45m"),
        (100 * 60 + 59, "1h 40m"),  # minutes round down: never promise more time than there is
        (3600, "1h"),
        (26 * 3600, "26h"),  # under two days, hours read better than days
        (47 * 3600 + 59 * 60, "47h 59m"),
        (2 * 86400 + 3 * 3600 + 59 * 60, "2d 3h"),
        (3 * 86400, "3d"),
        (-45 * 60, "overdue by 45m"),
        (-26 * 3600, "overdue by 26h"),
    ],
)
def test_a_duration_reads_in_its_two_largest_units(seconds, text):
    assert human_duration(seconds) == text
