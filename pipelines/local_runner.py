"""Six tunings of Beam's local streaming runner, ``BundleBasedDirectRunner``
(``tune``), the first two measured with py-spy on ``stream_ingest``
(BENCHMARKS.md), the others found in its logs:

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
  and while other work is queued a pull returns at once: fed steadily at 6
  messages a second, a job spent 90% of its time in pulls that waited
  for the next message while its batches waited for the pulls, and fell
  minutes behind;
* ``feed_roots_always``: the runner's monitor schedules the Pub/Sub read's
  next pull only in a round where no timer fired and no other step can
  run. With records arriving all the time that round never comes: a job
  fed steadily (20 messages a second) stopped reading after about 20 s,
  for good, while its timers went on firing. The read is scheduled in
  every round;
* ``serve_serial_steps_in_order``: a grouping or stateful step runs one
  bundle at a time from a queue that Beam serves last in, first out. A
  step whose timers keep firing (the stream health's tick, the alerts'
  holds) pushed work on top in every round, and the bundles of elements
  beneath never ran: the health judge stopped seeing records after about
  20 s while the lake went on receiving them, and raised a stall. The
  queue is served in arrival order;
* ``fire_each_timer_once``: the monitor extracts due timers in every round
  but they leave the keyed state only when their firing is evaluated, so a
  timer was scheduled again in every round until then (each firing of the
  health tick ran twice or more). A timer already scheduled and not yet
  done is not scheduled again;
* ``skip_empty_bundles``: every bundle a step finishes is handed to its
  consumers, empty or not, and every step emits a bundle per output for
  every bundle and timer firing it runs: each tick of a stateful step
  rippled empty work through every step below it (65,000 tasks in 6
  minutes for the alerts' sink alone), and an alert waited 35 s in a
  grouping step's queue behind empty bundles. Only bundles with elements
  are handed on.

Applied only by ``pipelines.stream_ingest`` when that runner is chosen;
FnApiRunner and Dataflow never call this code. Pinned to Beam 2.77.0's
internals: with another Beam each patch is skipped with a warning (see
``tests/test_local_runner.py``).
"""

from __future__ import annotations

import logging
import warnings
import weakref

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
_EXECUTOR_SERVICES: weakref.WeakSet = weakref.WeakSet()  # the local runners' thread pools, for _other_work_waiting


def _other_work_waiting() -> bool:
    """Whether a local runner has tasks queued besides its monitor (which
    is always queued again after it runs)."""
    queues = (getattr(service, "queue", None) for service in list(_EXECUTOR_SERVICES))
    return any(q is not None and q.qsize() > 1 for q in queues)


class _ShortPull:
    """A Pub/Sub subscriber client whose pulls wait at most
    ``PULL_DEADLINE_SECONDS``, and not at all while ``waiting()`` says other
    work is queued behind the pull."""

    def __init__(self, client, waiting=_other_work_waiting):
        self._client, self._waiting = client, waiting

    def pull(self, subscription, max_messages, timeout=None, **kwargs):
        deadline = PULL_DEADLINE_SECONDS if timeout is None else min(timeout, PULL_DEADLINE_SECONDS)
        if self._waiting():
            kwargs["return_immediately"] = True  # deprecated for servers' sake; the local runner has one thread
        return self._client.pull(subscription=subscription, max_messages=max_messages, timeout=deadline, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def shorten_pubsub_pull() -> bool:
    """Caps the local runner's Pub/Sub pull deadline, and makes a pull not
    wait while other work is queued (idempotent). Returns whether the patch
    is in place."""
    from apache_beam.runners.direct import executor, transform_evaluator

    evaluator = getattr(transform_evaluator, "_PubSubReadEvaluator", None)
    original = getattr(evaluator, "_get_subscriber_client", None)
    service = getattr(executor, "_ExecutorService", None)
    if original is None or service is None:
        logging.warning(
            "Beam %s: local Pub/Sub read not where expected; its pull deadline left at 30 s", beam.__version__
        )
        return False
    if getattr(original, _PATCHED, False):
        return True
    get_client = original.__func__
    init = service.__init__

    def _get_subscriber_client(cls, transform):
        return _ShortPull(get_client(cls, transform))

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        _EXECUTOR_SERVICES.add(self)

    warnings.filterwarnings("ignore", "The return_immediately flag is deprecated", DeprecationWarning)
    setattr(_get_subscriber_client, _PATCHED, True)
    evaluator._get_subscriber_client = classmethod(_get_subscriber_client)
    service.__init__ = __init__
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


def serve_serial_steps_in_order() -> bool:
    """Makes the local runner serve each serial step's queue first in, first
    out (idempotent). Returns whether the patch is in place."""
    from apache_beam.runners.direct import executor

    serial = getattr(executor, "_SerialEvaluationState", None)
    original = getattr(serial, "_update_currently_evaluating", None)
    if original is None:
        logging.warning("Beam %s: local runner's serial queue not where expected; left untuned", beam.__version__)
        return False
    if getattr(original, _PATCHED, False):
        return True

    def _update_currently_evaluating(self, new_work, completed_work):
        # Beam's body, the queue popped from the left (Beam pops the newest).
        with self._lock:
            if new_work:
                self.serial_queue.append(new_work)
            if completed_work:
                assert self.currently_evaluating == completed_work
                self.currently_evaluating = None
            if self.serial_queue and not self.currently_evaluating:
                next_work = self.serial_queue.popleft()
                self.currently_evaluating = next_work
                executor._TransformEvaluationState.schedule(self, next_work)

    setattr(_update_currently_evaluating, _PATCHED, True)
    serial._update_currently_evaluating = _update_currently_evaluating
    return True


_IN_FLIGHT = "_funnel_timers_in_flight"


def _timer_identity(firing) -> tuple:
    # Beam's TimerFiring compares by identity: each extraction makes new ones.
    return (
        firing.encoded_key,
        firing.window,
        firing.name,
        firing.time_domain,
        firing.timestamp,
        firing.dynamic_timer_tag,
    )


def fire_each_timer_once() -> bool:
    """Makes the local runner's monitor schedule a due timer once, not again
    in every round until its firing is done (idempotent). Returns whether
    the patch is in place."""
    from apache_beam.runners.direct import executor, watermark_manager

    monitor = getattr(getattr(executor, "_ExecutorServiceParallelExecutor", None), "_MonitorTask", None)
    watermarks = getattr(watermark_manager, "_TransformWatermarks", None)
    fire = getattr(monitor, "_fire_timers", None)
    update = getattr(watermarks, "update_timers", None)
    if fire is None or update is None or not hasattr(executor, "_CompletionCallback"):
        logging.warning("Beam %s: local runner's timer firing not where expected; left untuned", beam.__version__)
        return False
    if getattr(fire, _PATCHED, False):
        return True

    def _fire_timers(self):
        # Beam's body, less the timers whose firing is scheduled and not yet done.
        context = self._executor.evaluation_context
        transform_fired_timers, _ = context.extract_all_timers()
        fired = False
        for applied_ptransform, fired_timers in transform_fired_timers:
            transform_watermarks = context._watermark_manager.get_watermarks(applied_ptransform)
            with transform_watermarks._lock:
                in_flight = transform_watermarks.__dict__.setdefault(_IN_FLIGHT, set())
                fresh = [f for f in fired_timers if _timer_identity(f) not in in_flight]
                in_flight.update(_timer_identity(f) for f in fresh)
                # the extraction recorded the repeats as fired; only scheduled ones are completed
                transform_watermarks._fired_timers.difference_update(f for f in fired_timers if f not in fresh)
            if not fresh:
                continue
            empty_bundle = context.create_empty_committed_bundle(applied_ptransform.inputs[0])
            callback = executor._CompletionCallback(context, self._executor.all_updates, timer_firings=fresh)
            self._executor.schedule_consumption(applied_ptransform, empty_bundle, fresh, callback)
            fired = True
        return fired

    def update_timers(self, completed_timers):
        update(self, completed_timers)
        with self._lock:
            self.__dict__.get(_IN_FLIGHT, set()).difference_update(_timer_identity(f) for f in completed_timers)

    for function in (_fire_timers, update_timers):
        setattr(function, _PATCHED, True)
    monitor._fire_timers = _fire_timers
    watermarks.update_timers = update_timers
    return True


def skip_empty_bundles() -> bool:
    """Makes the local runner schedule a step's consumers only for a bundle
    with elements (idempotent). Returns whether the patch is in place."""
    from apache_beam.runners.direct import executor

    parallel = getattr(executor, "_ExecutorServiceParallelExecutor", None)
    original = getattr(parallel, "schedule_consumers", None)
    if original is None:
        logging.warning("Beam %s: local runner's scheduling not where expected; left untuned", beam.__version__)
        return False
    if getattr(original, _PATCHED, False):
        return True

    def schedule_consumers(self, committed_bundle):
        # Beam's own watermark update already ignores empty bundles; their timers come by the monitor.
        if committed_bundle.has_elements():
            original(self, committed_bundle)

    setattr(schedule_consumers, _PATCHED, True)
    parallel.schedule_consumers = schedule_consumers
    return True


def tune() -> None:
    memoize_dofn_specs()
    shorten_pubsub_pull()
    feed_roots_always()
    serve_serial_steps_in_order()
    fire_each_timer_once()
    skip_empty_bundles()
