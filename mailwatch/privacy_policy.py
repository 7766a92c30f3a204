"""The privacy policy for mail with no client participant (operations.md): what a reduction
keeps of it, and when.  The store carries the reduction out with these values.

Kept apart from `mailwatch.privacy` (retention, export, forget), which depends on the
evaluation: the evaluation, which runs the reduction, reads this module.
"""

from __future__ import annotations

from datetime import timedelta

from mailwatch.store.repository import ReductionPolicy

UNRELATED_MAIL = ReductionPolicy(
    # Mail with no client is reduced only once it is this old: an account added to the
    # configuration within that time still finds its correspondents' earlier mail whole.
    grace=timedelta(days=30),
    # Header values that name the recipient (unsubscribe links carry per-recipient tokens):
    # a reduced message keeps the field, which is what the automation rules look at, not
    # its value.
    recipient_headers=frozenset({"list-unsubscribe", "x-unsubscribe"}),
)
