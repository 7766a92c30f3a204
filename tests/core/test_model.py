"""The core's values cross process boundaries (the parsing process, evaluation workers) by
pickle: they come back equal."""

from __future__ import annotations

import copy
import pickle
from dataclasses import fields

from hypothesis import given, settings

from tests.core.factory import at, client
from tests.core.test_properties import mailboxes


@settings(max_examples=50, deadline=None)
@given(mailboxes())
def test_messages_and_their_copies_come_back_from_pickle_and_copy_equal(messages):
    for message in messages:
        assert pickle.loads(pickle.dumps(message)) == message
        assert copy.deepcopy(message) == message
        assert type(pickle.loads(pickle.dumps(message.copies[0]))) is type(message.copies[0])


def test_a_message_and_a_copy_are_pickled_as_the_arguments_of_their_constructor():
    """Not as a state that a `__setstate__` sets field by field: a third of handing a first
    sync's parsed mail between processes (docs/benchmarks.md, step 11)."""
    message = client("c1", at(0, 9), refs=("<s0>",))

    for value in (message, message.copies[0]):
        constructor, arguments = value.__reduce__()
        assert constructor is type(value)
        assert constructor(*arguments) == value
        assert len(arguments) == len(fields(value))
