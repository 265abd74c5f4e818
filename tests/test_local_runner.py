"""The local streaming runner's tuning gives Beam's own answers."""

import apache_beam as beam
from apache_beam.transforms import userstate

from pipelines import local_runner
from transforms.streaming.alerts import AlertStateFn


def test_memoized_dofn_specs_equal_beams_for_stateful_and_plain_dofns():
    original = userstate.get_dofn_specs
    dofns = [AlertStateFn(60), AlertStateFn(60, 5), beam.DoFn(), beam.Map(lambda x: x).dofn]
    expected = [original(d) for d in dofns]
    assert local_runner.memoize_dofn_specs()
    try:
        assert local_runner.memoize_dofn_specs()  # idempotent
        assert [userstate.get_dofn_specs(d) for d in dofns] == expected
        assert [userstate.get_dofn_specs(d) for d in dofns] == expected  # from the cache
        assert userstate.is_stateful_dofn(dofns[0]) and not userstate.is_stateful_dofn(dofns[2])
    finally:
        from apache_beam.runners.direct import transform_evaluator

        userstate.get_dofn_specs = transform_evaluator.get_dofn_specs = original


def test_the_local_pubsub_pull_waits_at_most_the_capped_deadline_and_not_at_all_behind_other_work():
    from apache_beam.runners.direct import executor, transform_evaluator

    evaluator = transform_evaluator._PubSubReadEvaluator
    original = evaluator.__dict__["_get_subscriber_client"]
    original_init = executor._ExecutorService.__dict__["__init__"]
    calls = []

    class Client:
        def pull(self, subscription, max_messages, timeout, **kwargs):
            calls.append((subscription, max_messages, timeout, kwargs))
            return "response"

        def acknowledge(self, **kwargs):
            return "acknowledged"

    evaluator._get_subscriber_client = classmethod(lambda cls, transform: Client())
    try:
        assert local_runner.shorten_pubsub_pull()
        assert local_runner.shorten_pubsub_pull()  # idempotent
        client = evaluator._get_subscriber_client(object())
        # the call Beam 2.77.0 makes (transform_evaluator._PubSubReadEvaluator._read_from_pubsub)
        assert client.pull(subscription="s", max_messages=10, timeout=30) == "response"
        assert client.acknowledge(subscription="s", ack_ids=[]) == "acknowledged"
        assert calls == [("s", 10, local_runner.PULL_DEADLINE_SECONDS, {})]
        # a runner's thread pool (no worker threads here) with its monitor and one more task queued
        service = executor._ExecutorService(0)
        service.queue.put("monitor")
        assert not local_runner._other_work_waiting()
        service.queue.put("another step")
        assert local_runner._other_work_waiting()
        client.pull(subscription="s", max_messages=10, timeout=30)
        assert calls[-1] == ("s", 10, local_runner.PULL_DEADLINE_SECONDS, {"return_immediately": True})
    finally:
        evaluator._get_subscriber_client = original
        executor._ExecutorService.__init__ = original_init


def test_the_roots_pending_work_is_scheduled_even_in_a_round_where_timers_fired():
    """A steadily fed job's Pub/Sub read must not wait for a round without timers (it never comes)."""
    from types import SimpleNamespace

    from apache_beam.runners.direct import executor

    monitor = executor._ExecutorServiceParallelExecutor._MonitorTask
    original = monitor.__dict__["_add_work_if_necessary"]
    scheduled = []
    fake = SimpleNamespace(
        _executor=SimpleNamespace(
            all_nodes=["read", "done"],
            node_to_pending_bundles={"read": ["next pull"], "done": ["never"]},
            evaluation_context=SimpleNamespace(is_done=lambda node: node == "done"),
            schedule_consumption=lambda node, bundle, timers, callback: scheduled.append((node, bundle)),
            default_completion_callback=None,
        ),
        _is_executing=lambda: True,  # another step could run: Beam would not feed the roots
    )
    try:
        assert local_runner.feed_roots_always()
        assert local_runner.feed_roots_always()  # idempotent
        monitor._add_work_if_necessary(fake, True)  # timers fired this round
        assert scheduled == [("read", "next pull")]
        assert fake._executor.node_to_pending_bundles["read"] == []
    finally:
        monitor._add_work_if_necessary = original


def test_a_serial_step_runs_its_queued_work_in_arrival_order():
    """Beam serves it newest first: work queued under a stream of timer firings never ran."""
    from types import SimpleNamespace

    from apache_beam.runners.direct import executor

    serial = executor._SerialEvaluationState
    original = serial.__dict__["_update_currently_evaluating"]
    submitted = []
    try:
        assert local_runner.serve_serial_steps_in_order()
        assert local_runner.serve_serial_steps_in_order()  # idempotent
        step = serial(SimpleNamespace(submit=submitted.append), set())
        for work in ("elements", "timer 1", "timer 2"):
            step.schedule(work)
        assert submitted == ["elements"]  # one at a time
        step.complete("elements")
        step.complete("timer 1")
        assert submitted == ["elements", "timer 1", "timer 2"]
    finally:
        serial._update_currently_evaluating = original


def test_a_due_timer_is_scheduled_once_until_its_firing_is_done():
    import time
    from types import SimpleNamespace

    from apache_beam.runners.direct import executor, watermark_manager
    from apache_beam.runners.direct.clock import RealClock
    from apache_beam.transforms.timeutil import TimeDomain
    from apache_beam.transforms.trigger import InMemoryUnmergedState
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import Timestamp

    monitor = executor._ExecutorServiceParallelExecutor._MonitorTask
    watermarks = watermark_manager._TransformWatermarks
    originals = monitor.__dict__["_fire_timers"], watermarks.__dict__["update_timers"]
    state = InMemoryUnmergedState()
    due = Timestamp.of(time.time() - 1)
    state.set_timer(GlobalWindow(), "hold", TimeDomain.REAL_TIME, due)
    step_watermarks = watermarks(RealClock(), {b"key": state}, "step")
    step = SimpleNamespace(inputs=["input"])

    def extract_all_timers():
        fired, realtime = step_watermarks.extract_transform_timers()  # Beam's: a new TimerFiring each time
        return ([(step, fired)] if fired else []), realtime

    scheduled = []
    fake = SimpleNamespace(
        _executor=SimpleNamespace(
            evaluation_context=SimpleNamespace(
                extract_all_timers=extract_all_timers,
                _watermark_manager=SimpleNamespace(get_watermarks=lambda transform: step_watermarks),
                create_empty_committed_bundle=lambda pcollection: "empty bundle",
            ),
            all_updates=None,
            schedule_consumption=lambda transform, bundle, timers, callback: scheduled.append(timers),
        )
    )
    try:
        assert local_runner.fire_each_timer_once()
        assert local_runner.fire_each_timer_once()  # idempotent
        assert monitor._fire_timers(fake)
        assert not monitor._fire_timers(fake)  # still in the keyed state, but its firing is under way
        assert [[t.name for t in timers] for timers in scheduled] == [["hold"]]
        # the firing is evaluated (clears the timer) and done; the step sets it again at the same time
        state.clear_timer(GlobalWindow(), "hold", TimeDomain.REAL_TIME)
        step_watermarks.update_timers(scheduled[0])
        state.set_timer(GlobalWindow(), "hold", TimeDomain.REAL_TIME, due)
        assert monitor._fire_timers(fake)
        assert len(scheduled) == 2
    finally:
        monitor._fire_timers, watermarks.update_timers = originals


def test_only_bundles_with_elements_are_handed_to_consumers():
    from types import SimpleNamespace

    from apache_beam.runners.direct import executor

    parallel = executor._ExecutorServiceParallelExecutor
    original = parallel.__dict__["schedule_consumers"]
    scheduled = []
    fake = SimpleNamespace(
        value_to_consumers={"pcollection": ["consumer"]},
        schedule_consumption=lambda transform, bundle, timers, callback: scheduled.append((transform, bundle)),
        default_completion_callback=None,
    )
    empty = SimpleNamespace(pcollection="pcollection", has_elements=lambda: False)
    full = SimpleNamespace(pcollection="pcollection", has_elements=lambda: True)
    try:
        assert local_runner.skip_empty_bundles()
        assert local_runner.skip_empty_bundles()  # idempotent
        parallel.schedule_consumers(fake, empty)
        parallel.schedule_consumers(fake, full)
        assert scheduled == [("consumer", full)]
    finally:
        parallel.schedule_consumers = original
