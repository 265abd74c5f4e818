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


def test_the_local_pubsub_pull_waits_at_most_the_capped_deadline():
    from apache_beam.runners.direct import transform_evaluator

    evaluator = transform_evaluator._PubSubReadEvaluator
    original = evaluator.__dict__["_get_subscriber_client"]
    calls = []

    class Client:
        def pull(self, subscription, max_messages, timeout):
            calls.append((subscription, max_messages, timeout))
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
        assert calls == [("s", 10, local_runner.PULL_DEADLINE_SECONDS)]
    finally:
        evaluator._get_subscriber_client = original


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
