"""Summaries added up from tallies: what a digest run does for each digest's accounts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailwatch.core.model import Status
from mailwatch.core.stats import Outcome, summarize, summary_of, tally

outcomes = st.lists(
    st.builds(
        Outcome,
        st.just("<a@acme.example>"),
        st.sampled_from(["Acme Ltd", "Globex"]),
        st.sampled_from(Status),
        st.one_of(st.none(), st.integers(0, 10**6)),
    ),
    max_size=40,
)


@given(outcomes, st.lists(st.integers(0, 40), max_size=5))
def test_the_tallies_of_any_split_of_requests_add_up_to_the_summary_of_them_all(
    measured: list[Outcome], cuts: list[int]
):
    points = sorted(min(cut, len(measured)) for cut in cuts)
    parts = [measured[a:b] for a, b in zip([0, *points], [*points, len(measured)], strict=True)]

    assert summary_of(tally(part) for part in parts) == summarize(measured)


def test_the_median_and_p90_of_tallies_added_up_are_over_all_their_response_times():
    acme = [Outcome("<a@x>", "Acme Ltd", Status.MET, seconds) for seconds in (40, 10)]
    globex = [Outcome("<b@x>", "Globex", Status.BREACHED, seconds) for seconds in (30, 20)]
    waived = [Outcome("<c@x>", "Globex", Status.WAIVED, None)]

    summary = summary_of([tally(acme), tally(globex + waived), tally(())])

    assert (summary.requests, summary.met, summary.breached, summary.waived) == (5, 2, 2, 1)
    assert summary.compliance == 0.5
    assert (summary.median_response_seconds, summary.p90_response_seconds) == (25, 40)
