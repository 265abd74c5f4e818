"""Silver -> the gold facts, dimension and marts of TABLES_AND_METRICS.md.

One shuffle groups each session with its views, events, responses and
activities (``SummarizeSessions``); the funnel, the user dimension and both
marts are built from those per-session summaries.
"""
from __future__ import annotations

import statistics
from datetime import date, datetime, time, timedelta, timezone

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas import contract
from transforms.funnel import country_of, funnel_stage_rows, is_confirmation, reached_stages

GRAINS = ("day", "month", "year")
ALL_PLATFORMS = "all"


def period_start(day: str, grain: str) -> str:
    return {"day": day, "month": day[:7] + "-01", "year": day[:4] + "-01-01"}[grain]


def ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def periods(day: str, platform: str):
    """Every (grain, period_start, platform) a record of this day and platform counts in."""
    for grain in GRAINS:
        start = period_start(day, grain)
        yield grain, start, platform
        yield grain, start, ALL_PLATFORMS


# --- per-session summaries ------------------------------------------------------------------
def _pick(*columns):
    return lambda r: (r["session_id"], {c: r[c] for c in columns})


class SummarizeSessionFn(beam.DoFn):
    """(session_id, grouped silver rows) -> a summary (main output) and the
    session's barcode scans (tag ``scans``)."""

    def process(self, keyed):
        session_id, g = keyed
        sessions = list(g["session"])
        if sessions:  # none when --as-of cut the session but not a late child
            yield from self._summarize(session_id, sessions[0], g)

    @staticmethod
    def _summarize(session_id, s, g):
        events, responses, activities = list(g["event"]), list(g["response"]), list(g["activity"])
        reached = reached_stages(list(g["view"]), events, responses, activities)
        times = [t for t in ([s["session_start_time"], s["first_activity_at"], s["last_activity_at"]]
                             + [r["sent_at"] for r in responses] + [a["activity_time"] for a in activities])
                 if t is not None]
        payments = {e["event_id"]: e["timestamp"] for e in events if e["event_type"] == "payment_successful"}
        yield {
            "session_id": session_id, "user_id": s["user_id"], "session_date": s["session_date"],
            "session_start_time": s["session_start_time"], "platform": s["platform"],
            "device_type": s["device_type"], "geo_location": s["geo_location"],
            "reached": reached, "payment_event_ids": sorted(payments),
            "first_seen_at": min(times), "last_seen_at": max(times),
        }
        response_event = {r["response_id"]: r["event_id"] for r in responses}
        for a in activities:
            if a["activity_type"] != "barcode_scanned":
                continue
            payment_id = response_event.get(a["response_id"])
            paid_at = payments.get(payment_id)
            yield beam.pvalue.TaggedOutput("scans", {
                "activity_id": a["activity_id"], "activity_time": a["activity_time"],
                "user_id": s["user_id"], "platform": s["platform"],
                "payment_event_id": payment_id if paid_at is not None else None,
                "seconds_payment_to_scan": None if paid_at is None else (a["activity_time"] - paid_at) / 1e6,
            })


class SummarizeSessions(beam.PTransform):
    def expand(self, silver):
        resolved = lambda r: r["session_id"] is not None  # noqa: E731
        grouped = {
            "session": silver["silver_sessions"] | "KeySessions" >> beam.Map(lambda r: (r["session_id"], r)),
            "view": silver["silver_views"] | "KeyViews" >> beam.Map(_pick("view_timestamp")),
            "event": silver["silver_events"] | "KeyEvents" >> beam.Map(_pick("event_id", "event_type", "timestamp")),
            "response": (silver["silver_event_responses"] | "ResolvedResponses" >> beam.Filter(resolved)
                         | "KeyResponses" >> beam.Map(_pick("response_id", "event_id", "response_type",
                                                            "status", "sent_at"))),
            "activity": (silver["silver_user_activity"] | "ResolvedActivities" >> beam.Filter(resolved)
                         | "KeyActivities" >> beam.Map(_pick("activity_id", "response_id", "activity_type",
                                                             "activity_time"))),
        } | "CoGroupBySession" >> beam.CoGroupByKey()
        return grouped | "Summarize" >> beam.ParDo(SummarizeSessionFn()).with_outputs("scans", main="sessions")


# --- users: dim_user and the funnel facts (they need the user's country) ----------------------
class JoinUsersFn(beam.DoFn):
    """(user_id, {user, sessions}) -> dim_user row (tag ``dim_user``) and
    fact_funnel_stage rows (main)."""

    def process(self, keyed):
        user_id, g = keyed
        users, sessions = list(g["user"]), sorted(g["session"], key=lambda s: (s["session_start_time"], s["session_id"]))
        user = users[0] if users else None
        for s in sessions:
            yield from funnel_stage_rows(s, country_of(user, s))
        yield beam.pvalue.TaggedOutput("dim_user", {
            "user_id": user_id,
            **{c: user[c] if user else None for c in ("email_hash", "country", "is_active", "signup_date")},
            "first_seen_at": min((s["first_seen_at"] for s in sessions), default=None),
            "last_seen_at": max((s["last_seen_at"] for s in sessions), default=None),
            "first_platform": sessions[0]["platform"] if sessions else None,
            "lifetime_sessions": len(sessions),
            "lifetime_payments": len({p for s in sessions for p in s["payment_event_ids"]}),
            "furthest_stage_number": max((len(s["reached"]) for s in sessions), default=0),
        })


# --- marts -----------------------------------------------------------------------------------
class ConversionFn(beam.CombineFn):
    """(reached stage count, user_id) per session -> mart_conversion_rate measures."""

    def create_accumulator(self):
        return [[0] * 5, set(), set()]

    def add_input(self, acc, session):
        stages, user_id = session
        for i in range(stages):
            acc[0][i] += 1
        if user_id is not None and stages >= 1:
            acc[1].add(user_id)
        if user_id is not None and stages >= 3:
            acc[2].add(user_id)
        return acc

    def merge_accumulators(self, accs):
        merged = self.create_accumulator()
        for counts, browse, pay in accs:
            merged[0] = [a + b for a, b in zip(merged[0], counts)]
            merged[1] |= browse
            merged[2] |= pay
        return merged

    def extract_output(self, acc):
        (browse, cart, pay, confirm, scan), users_browse, users_pay = acc
        return {
            "sessions_browse": browse, "sessions_add_to_cart": cart, "sessions_payment": pay,
            "sessions_email_confirmation": confirm, "sessions_barcode_scanned": scan,
            "users_browse": len(users_browse), "users_payment": len(users_pay),
            "conversion_rate": ratio(pay, browse), "cart_rate": ratio(cart, browse),
            "checkout_rate": ratio(pay, cart), "confirmation_rate": ratio(confirm, pay),
            "scan_rate": ratio(scan, confirm),
        }


class BarcodeFn(beam.CombineFn):
    """Scans -> mart_barcode_activity measures. Accumulator:
    [activity ids, users, payment events, seconds payment -> scan]."""

    def create_accumulator(self):
        return [set(), set(), set(), []]

    def add_input(self, acc, scan):
        acc[0].add(scan["activity_id"])
        if scan["user_id"] is not None:
            acc[1].add(scan["user_id"])
        if scan["payment_event_id"] is not None:
            acc[2].add(scan["payment_event_id"])
            acc[3].append(scan["seconds_payment_to_scan"])
        return acc

    def merge_accumulators(self, accs):
        merged = self.create_accumulator()
        for ids, users, orders, seconds in accs:
            merged[0] |= ids
            merged[1] |= users
            merged[2] |= orders
            merged[3].extend(seconds)
        return merged

    def extract_output(self, acc):
        ids, users, orders, seconds = acc
        return {"barcode_scans": len(ids), "scanning_users": len(users), "scanned_orders": len(orders),
                "median_seconds_payment_to_scan": statistics.median(seconds) if seconds else None}


def _period_row(keyed):
    (grain, start, platform), measures = keyed
    return {"period_grain": grain, "period_start": start, "platform": platform, **measures}


class PeriodMart(beam.PTransform):
    """Rows -> one row per (grain, period_start, platform incl. 'all')."""

    def __init__(self, day_of, value_of, combine_fn):
        super().__init__()
        self._day_of, self._value_of, self._combine_fn = day_of, value_of, combine_fn

    def expand(self, rows):
        day_of, value_of = self._day_of, self._value_of
        return (rows
                | "ToPeriods" >> beam.FlatMap(lambda r: ((k, value_of(r)) for k in periods(day_of(r), r["platform"])))
                | "Aggregate" >> beam.CombinePerKey(self._combine_fn)
                | "ToRow" >> beam.Map(_period_row))


# --- fact_user_activity -----------------------------------------------------------------------
_ACTIVITY_MEASURES = ("sessions", "views", "clicks", "browse_events", "add_to_cart_events", "payments",
                      "confirmations_sent", "barcode_scans")
_EVENT_MEASURE = {"browse": "browse_events", "add_to_cart": "add_to_cart_events", "payment_successful": "payments"}


def _activity(measure: str, time_column: str):
    def to_counts(row):
        if row["user_id"] is None or row[time_column] is None or measure is None:
            return []
        day = row[time_column] if time_column == "session_date" else contract.micros_to_date(row[time_column])
        return [((row["user_id"], day), _ACTIVITY_MEASURES.index(measure))]
    return to_counts


class CountMeasuresFn(beam.CombineFn):
    """Measure indexes -> a count per measure of _ACTIVITY_MEASURES."""

    def create_accumulator(self):
        return [0] * len(_ACTIVITY_MEASURES)

    def add_input(self, acc, index):
        acc[index] += 1
        return acc

    def merge_accumulators(self, accs):
        return [sum(counts) for counts in zip(*accs)]

    def extract_output(self, acc):
        return acc


class UserActivity(beam.PTransform):
    def expand(self, silver):
        sources = [
            silver["silver_sessions"] | "SessionDays" >> beam.FlatMap(_activity("sessions", "session_date")),
            silver["silver_views"] | "ViewDays" >> beam.FlatMap(_activity("views", "view_timestamp")),
            silver["silver_clicks"] | "ClickDays" >> beam.FlatMap(_activity("clicks", "click_timestamp")),
            silver["silver_events"] | "EventDays" >> beam.FlatMap(
                lambda r: _activity(_EVENT_MEASURE.get(r["event_type"]), "timestamp")(r)),
            silver["silver_event_responses"] | "ConfirmationDays" >> beam.FlatMap(
                lambda r: _activity("confirmations_sent" if is_confirmation(r) else None, "sent_at")(r)),
            silver["silver_user_activity"] | "ScanDays" >> beam.FlatMap(
                lambda r: _activity("barcode_scans" if r["activity_type"] == "barcode_scanned" else None,
                                    "activity_time")(r)),
        ]
        return (sources
                | "AllActivity" >> beam.Flatten()
                | "CountPerUserDay" >> beam.CombinePerKey(CountMeasuresFn())
                | "ToRow" >> beam.Map(lambda kv: {"user_id": kv[0][0], "activity_date": kv[0][1],
                                                  **dict(zip(_ACTIVITY_MEASURES, kv[1]))}))


# --- as-of cut --------------------------------------------------------------------------------
_OWN_TIME = {"silver_sessions": "session_start_time", "silver_views": "view_timestamp",
             "silver_clicks": "click_timestamp", "silver_events": "timestamp",
             "silver_event_responses": "sent_at", "silver_user_activity": "activity_time"}


def end_of_day_micros(day: date) -> int:
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=timezone.utc)
    return (end - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


class CutAtAsOf(beam.PTransform):
    """Keeps the records whose own time is on or before the as-of date, so a
    recompute "as of" a past day restates that day as it was then knowable."""

    def __init__(self, as_of: date):
        super().__init__()
        self._end = end_of_day_micros(as_of)
        self._dropped = Metrics.counter("funnel", "gold_records_after_as_of")

    def expand(self, silver):
        end, dropped = self._end, self._dropped

        def keep(row, column):
            t = row[column]
            if t is None or t < end:
                return True
            dropped.inc()
            return False

        return {name: (rows if name not in _OWN_TIME else
                       rows | f"AsOf_{name}" >> beam.Filter(keep, _OWN_TIME[name]))
                for name, rows in silver.items()}


class BuildGold(beam.PTransform):
    """``{silver table: rows}`` -> ``{gold table: rows}``."""

    def expand(self, silver):
        summaries = silver | "SummarizeSessions" >> SummarizeSessions()
        sessions = summaries.sessions
        with_user = sessions | "WithUser" >> beam.Filter(lambda s: s["user_id"] is not None)
        anonymous = sessions | "Anonymous" >> beam.Filter(lambda s: s["user_id"] is None)
        joined = ({"user": silver["silver_users"] | "KeyUsers" >> beam.Map(lambda u: (u["user_id"], u)),
                   "session": with_user | "KeySessionsByUser" >> beam.Map(lambda s: (s["user_id"], s))}
                  | "CoGroupByUser" >> beam.CoGroupByKey()
                  | "JoinUsers" >> beam.ParDo(JoinUsersFn()).with_outputs("dim_user", main="funnel"))
        anonymous_funnel = anonymous | "AnonymousFunnel" >> beam.FlatMap(
            lambda s: funnel_stage_rows(s, country_of(None, s)))
        unresolved_scans = (silver["silver_user_activity"]
                            | "UnresolvedScans" >> beam.Filter(
                                lambda a: a["session_id"] is None and a["activity_type"] == "barcode_scanned")
                            | "AsScan" >> beam.Map(lambda a: {
                                "activity_id": a["activity_id"], "activity_time": a["activity_time"],
                                "user_id": None, "platform": a["platform"], "payment_event_id": None,
                                "seconds_payment_to_scan": None}))
        return {
            "fact_funnel_stage": (joined.funnel, anonymous_funnel) | "AllFunnelRows" >> beam.Flatten(),
            "dim_user": joined.dim_user,
            "fact_user_activity": silver | "FactUserActivity" >> UserActivity(),
            "mart_conversion_rate": sessions | "MartConversionRate" >> PeriodMart(
                lambda s: s["session_date"], lambda s: (len(s["reached"]), s["user_id"]), ConversionFn()),
            "mart_barcode_activity": ((summaries.scans, unresolved_scans) | "AllScans" >> beam.Flatten()
                                      | "MartBarcodeActivity" >> PeriodMart(
                                          lambda s: contract.micros_to_date(s["activity_time"]),
                                          lambda s: s, BarcodeFn())),
        }
