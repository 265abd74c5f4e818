"""Three tunings of Beam's local streaming runner, ``BundleBasedDirectRunner``
(``tune``), both measured with py-spy on ``stream_ingest`` (BENCHMARKS.md):

* ``memoize_dofn_specs``: the runner asks, for every ParDo at the start of
  every bundle (a bundle is at most 10 Pub/Sub messages there), whether the
  DoFn is stateful, by inspecting the signature of every method of the DoFn
  (``apache_beam.transforms.userstate.get_dofn_specs``, which calls
  ``inspect.signature`` per method): 40% of the process's time while
  draining a backlog. The answer depends only on the DoFn's class -- state
  and timer specs are class attributes named in method defaults -- so it is
  cached per class; a local backlog then drains about three times faster.
* ``shorten_pubsub_pull``: the runner has one executor thread, and when the
  subscription is empty its pull waits up to 30 s, during which no timer
  fires: every processing-time batch (sinks, silver upserts) waited up to
  30 s per step. The pull's deadline is capped at 2 s (an empty pull then
  returns after about 1 s), so timers fire about once a second when idle;
* ``feed_roots_always``: the runner's monitor schedules the Pub/Sub read's
  next pull only in a round where no timer fired and no other step can
  run. With records arriving all the time that round never comes: a job
  fed steadily (20 messages a second) stopped reading after about 20 s,
  for good, while its timers went on firing. The read is scheduled in
  every round.

Applied only by ``pipelines.stream_ingest`` when that runner is chosen;
FnApiRunner and Dataflow never call this code. Pinned to Beam 2.77.0's
internals: with another Beam each patch is skipped with a warning (see
``tests/test_local_runner.py``).
"""

from __future__ import annotations

import logging

import apache_beam as beam

_PATCHED = "_funnel_memoized"


def memoize_dofn_specs() -> bool:
    """Caches ``get_dofn_specs`` per DoFn class (idempotent). Returns whether
    the patch is in place."""
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.transforms import core, userstate

    original = userstate.get_dofn_specs
    if getattr(original, _PATCHED, False):
        return True
    if transform_evaluator.get_dofn_specs is not original:
        logging.warning("Beam %s: DoFn introspection not where expected; local runner left untuned", beam.__version__)
        return False
    by_class = {}

    def get_dofn_specs(dofn):
        # A Map/FlatMap's DoFn class wraps any function: not cached.
        if isinstance(dofn, core.CallableWrapperDoFn):
            return original(dofn)
        specs = by_class.get(type(dofn))
        if specs is None:
            specs = by_class[type(dofn)] = original(dofn)
        return specs

    setattr(get_dofn_specs, _PATCHED, True)
    userstate.get_dofn_specs = get_dofn_specs  # is_stateful_dofn, validate_stateful_dofn
    transform_evaluator.get_dofn_specs = get_dofn_specs  # the ParDo evaluator's own import
    return True


PULL_DEADLINE_SECONDS = 2


class _ShortPull:
    """A Pub/Sub subscriber client whose pulls wait at most ``PULL_DEADLINE_SECONDS``."""

    def __init__(self, client):
        self._client = client

    def pull(self, subscription, max_messages, timeout=None, **kwargs):
        deadline = PULL_DEADLINE_SECONDS if timeout is None else min(timeout, PULL_DEADLINE_SECONDS)
        return self._client.pull(subscription=subscription, max_messages=max_messages, timeout=deadline, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def shorten_pubsub_pull() -> bool:
    """Caps the local runner's Pub/Sub pull deadline (idempotent). Returns
    whether the patch is in place."""
    from apache_beam.runners.direct import transform_evaluator

    evaluator = getattr(transform_evaluator, "_PubSubReadEvaluator", None)
    original = getattr(evaluator, "_get_subscriber_client", None)
    if original is None:
        logging.warning(
            "Beam %s: local Pub/Sub read not where expected; its pull deadline left at 30 s", beam.__version__
        )
        return False
    if getattr(original, _PATCHED, False):
        return True
    get_client = original.__func__

    def _get_subscriber_client(cls, transform):
        return _ShortPull(get_client(cls, transform))

    setattr(_get_subscriber_client, _PATCHED, True)
    evaluator._get_subscriber_client = classmethod(_get_subscriber_client)
    return True


def feed_roots_always() -> bool:
    """Makes the local runner's monitor schedule the roots' pending work
    (the Pub/Sub read's next pull) in every round (idempotent). Returns
    whether the patch is in place."""
    from apache_beam.runners.direct import executor

    monitor = getattr(getattr(executor, "_ExecutorServiceParallelExecutor", None), "_MonitorTask", None)
    original = getattr(monitor, "_add_work_if_necessary", None)
    if original is None:
        logging.warning("Beam %s: local runner's monitor not where expected; left untuned", beam.__version__)
        return False
    if getattr(original, _PATCHED, False):
        return True

    def _add_work_if_necessary(self, timers_fired):
        # Beam's body without its two early returns (timers fired; another step can run).
        context = self._executor.evaluation_context
        for applied_ptransform in self._executor.all_nodes:
            if not context.is_done(applied_ptransform):
                pending = self._executor.node_to_pending_bundles.get(applied_ptransform, [])
                for bundle in pending:
                    self._executor.schedule_consumption(
                        applied_ptransform, bundle, [], self._executor.default_completion_callback
                    )
                self._executor.node_to_pending_bundles[applied_ptransform] = []

    setattr(_add_work_if_necessary, _PATCHED, True)
    monitor._add_work_if_necessary = _add_work_if_necessary
    return True


def tune() -> None:
    memoize_dofn_specs()
    shorten_pubsub_pull()
    feed_roots_always()
