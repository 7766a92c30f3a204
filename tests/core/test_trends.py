"""A period's figures against the period before and the average of the periods before."""

from __future__ import annotations

from mailwatch.core.stats import Summary
from mailwatch.core.trends import periods_with_data, trends


def summary(requests: int, met: int, breached: int, median: int | None) -> Summary:
    measured = met + breached
    return Summary(
        requests=requests,
        met=met,
        breached=breached,
        overdue=0,
        open=requests - measured,
        waived=0,
        compliance=met / measured if measured else None,
        median_response_seconds=median,
        p90_response_seconds=median,
    )


def test_the_average_leaves_out_the_periods_that_received_no_request():
    earlier = [
        summary(0, 0, 0, None),
        summary(4, 3, 1, 3600),
        summary(0, 0, 0, None),
        summary(2, 2, 0, 1800),
    ]

    found = trends(summary(6, 3, 3, 7200), earlier)

    assert periods_with_data(earlier) == 2
    assert found["requests"].average == 3
    assert found["compliance"].average == (0.75 + 1.0) / 2
    assert found["median_response_seconds"].average == 2700
    assert found["compliance"].change_from_previous == 0.5 - 1.0
    assert found["requests"].change_from_average == 3


def test_a_figure_not_measured_on_either_side_has_no_change():
    found = trends(summary(1, 0, 0, None), [summary(0, 0, 0, None)])

    assert found["compliance"].as_dict() == {
        "current": None,
        "previous": None,
        "average": None,
        "change_from_previous": None,
        "change_from_average": None,
    }
    assert (found["requests"].previous, found["requests"].change_from_previous) == (0, 1)
