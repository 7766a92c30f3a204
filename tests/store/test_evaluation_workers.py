"""A first evaluation shared with worker processes stores exactly what one evaluation in
the evaluating process stores, on both databases."""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path

from sqlalchemy import select

from mailwatch.core.model import Waiver
from mailwatch.evaluation import POLICY_STATE, refresh_requests
from mailwatch.evaluation_workers import Workers, worker_processes
from mailwatch.store.repository import Store
from mailwatch.store.tables import MESSAGES, PEOPLE, REQUESTS
from tests.core.factory import at, client, staff
from tests.store.test_incremental import NOW, settings_with, stored

AUTO_REPLY = (("auto-submitted", "auto-replied"),)


def agency_history() -> list:
    """A month of threads: answered, chased, auto-replied to, joined by subject alone."""
    mail = []
    for day in range(20):
        subject = f"Topic {day % 4}"
        mail.append(client(f"c{day}", at(day, 9), subject=subject))
        if day % 3:
            mail.append(
                staff(f"s{day}", at(day, 15), subject=f"Re: {subject}", refs=(f"<c{day}>",))
            )
        if day % 4 == 1:
            mail.append(staff(f"ooo{day}", at(day, 9, 5), refs=(f"<c{day}>",), headers=AUTO_REPLY))
        if day % 5 == 2:  # a chaser with no reference: the subject fallback joins it
            mail.append(client(f"chase{day}", at(day + 1, 10), subject=f"Re: {subject}"))
    return mail


def what_is_stored(store: Store) -> dict[str, object]:
    """Every stored fact an evaluation writes, in an order of its own."""
    columns = (
        MESSAGES.c.key,
        MESSAGES.c.thread_id,
        MESSAGES.c.dirty,
        MESSAGES.c.role,
        MESSAGES.c.responder,
        MESSAGES.c.at,
        MESSAGES.c.automated,
        MESSAGES.c.out_of_office,
    )
    skipped = {"id", "evaluated_at"}
    request_columns = [c for c in REQUESTS.c if c.name not in skipped]
    with store.engine.connect() as conn:
        messages = sorted(tuple(row) for row in conn.execute(select(*columns)))
        requests = sorted(
            json.dumps(tuple(row), default=str) for row in conn.execute(select(*request_columns))
        )
        people = sorted(conn.scalars(select(PEOPLE.c.address)))
    return {"messages": messages, "requests": requests, "people": people}


def test_a_first_evaluation_in_worker_processes_stores_what_one_in_this_process_does(
    store, monkeypatch
):
    import mailwatch.evaluation as engine

    store.add_messages(stored(agency_history()))
    monkeypatch.setattr(engine, "EVALUATION_BATCH", 4)  # many pages and parts, out of order
    refresh_requests(settings_with(), store, NOW)
    in_this_process = what_is_stored(store)

    store.set_state(POLICY_STATE, "")  # as after a change of policy: everything again
    monkeypatch.setattr(engine, "worker_processes", lambda *args: 2)
    pools = []

    class Recorded(Workers):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(type(self.executor).__name__)

    monkeypatch.setattr(engine, "Workers", Recorded)
    refreshed = refresh_requests(settings_with(), store, NOW)

    assert pools == ["ProcessPoolExecutor"]  # one pool classifies, then evaluates
    assert refreshed.rebuilt
    assert refreshed.messages == len(in_this_process["messages"])
    assert what_is_stored(store) == in_this_process
    assert len(in_this_process["requests"]) >= 10  # a history worth comparing


def test_a_change_stored_while_worker_processes_evaluate_stays_to_be_evaluated(store, monkeypatch):
    import mailwatch.evaluation as engine

    store.add_messages(stored(agency_history()))
    monkeypatch.setattr(engine, "EVALUATION_BATCH", 4)
    monkeypatch.setattr(engine, "worker_processes", lambda *args: 2)
    read_context = engine.mail_context

    def waiver_after_classification(*args):
        # the counters were read with the classification: this waiver comes after them
        store.add_waiver(Waiver("<c3>", by="cli", seen_at=at(3, 11)))
        return read_context(*args)

    monkeypatch.setattr(engine, "mail_context", waiver_after_classification)
    refresh_requests(settings_with(), store, NOW)

    # every thread stored, and the changed message left to be evaluated again
    assert store.dirty_keys() == {"<c3>": 2}


def test_a_change_stored_before_a_first_evaluation_in_worker_processes_is_evaluated(
    store, monkeypatch
):
    import mailwatch.evaluation as engine

    store.add_messages(stored(agency_history()))
    store.add_waiver(Waiver("<c3>", by="cli", seen_at=at(3, 11)))  # its counter: 2, not 1
    monkeypatch.setattr(engine, "EVALUATION_BATCH", 4)
    monkeypatch.setattr(engine, "worker_processes", lambda *args: 2)

    refresh_requests(settings_with(), store, NOW)

    assert store.dirty_keys() == {}
    (waived,) = [r for r in store.requests() if "<c3>" in r.messages]
    assert waived.waiver is not None


def test_the_evaluating_process_classifies_pages_itself_while_the_workers_start(store, monkeypatch):
    import mailwatch.evaluation as engine
    import mailwatch.evaluation_workers as workers

    in_this_process = []
    classified_page = workers.classified_page

    def noted(settings, store, after, upto):
        in_this_process.append(upto - after)
        return classified_page(settings, store, after, upto)

    monkeypatch.setattr(workers, "classified_page", noted)  # the workers run their own module
    monkeypatch.setattr(engine, "EVALUATION_BATCH", 4)
    monkeypatch.setattr(engine, "worker_processes", lambda *args: 2)
    store.add_messages(stored(agency_history()))
    refresh_requests(settings_with(), store, NOW)

    assert in_this_process[:1] == [4]


def test_the_evaluating_process_evaluates_parts_itself_while_the_workers_start(store, monkeypatch):
    import mailwatch.evaluation as engine
    import mailwatch.evaluation_workers as workers

    in_this_process = []
    evaluate_keys = workers._Work.evaluate_keys

    def noted(work, now, context, thread_of, rule_headers):
        in_this_process.append(len(thread_of))
        return evaluate_keys(work, now, context, thread_of, rule_headers)

    monkeypatch.setattr(workers._Work, "evaluate_keys", noted)  # not in the workers' module
    monkeypatch.setattr(engine, "EVALUATION_BATCH", 4)
    monkeypatch.setattr(engine, "worker_processes", lambda *args: 2)
    store.add_messages(stored(agency_history()))
    refresh_requests(settings_with(), store, NOW)

    assert in_this_process  # the first part at least, before any worker ran


def child_commands() -> list[str]:
    """The command line of each child process of this one."""
    children = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        children += (task / "children").read_text().split()
    return [Path(f"/proc/{child}/cmdline").read_text().replace("\0", " ") for child in children]


def test_worker_processes_start_with_their_modules_imported_and_leave_no_process_behind(store):
    with Workers(settings_with(), store, processes=2) as workers:
        # a worker's CPU time before its first task: a fresh interpreter took ~0.9 s
        started = workers.executor.submit(time.process_time).result()
        forkservers = [c for c in child_commands() if "forkserver" in c]

    assert started < 0.3
    assert len(forkservers) == 1
    assert not [c for c in child_commands() if "forkserver" in c]


def test_a_small_store_or_an_in_memory_database_is_evaluated_without_worker_processes(store):
    in_memory = Store("sqlite://")
    try:
        assert worker_processes(in_memory, 1_000_000, 50_000) == 0
    finally:
        in_memory.close()
    assert worker_processes(store, 49_999, 50_000) == 0


def test_a_first_evaluation_runs_with_the_cyclic_collector_paused_and_it_runs_after(
    store, monkeypatch
):
    import mailwatch.evaluation as engine
    import mailwatch.evaluation_workers as workers

    collecting = []
    classified_page = workers.classified_page

    def noting_the_collector(*args):
        collecting.append(gc.isenabled())
        return classified_page(*args)

    monkeypatch.setattr(workers, "classified_page", noting_the_collector)
    store.add_messages(stored(agency_history()))
    engine.refresh_requests(settings_with(), store, NOW)

    assert collecting and not any(collecting)
    assert gc.isenabled()
