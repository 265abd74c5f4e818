"""Bronze -> silver: one current row per identity, joined.

Joins of the contract, each tolerant of either side missing:

* view / click / event -> session by ``session_id`` (a session whose record
  never arrived is inferred from its earliest view/click/event: that date
  and platform, no user);
* event_response -> event by ``event_id`` (-> session -> user);
* user_activity -> event_response by ``response_id`` (-> event -> session).

Every silver row carries ``session_id``, ``user_id`` and ``platform``
resolved as far as the data allows; when the parent is unknown the row keeps
its own platform and null session/user.
"""
from __future__ import annotations

from collections import Counter

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas import contract
from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE
from transforms.dedup import DedupByIdentity
from transforms.funnel import reached_stages

_CHILD_TIME = {"view": "view_timestamp", "click": "click_timestamp", "event": "timestamp"}
_CHILD_TABLE = {"view": "silver_views", "click": "silver_clicks", "event": "silver_events"}


def resolve_session(session_id: str, session: dict | None, children: dict[str, list[dict]]) -> dict:
    """The silver_sessions row of one session from its (deduped) record and children."""
    times = [(c[_CHILD_TIME[kind]], c) for kind, rows in children.items() for c in rows]
    first = min(times, key=lambda tc: (tc[0], tc[1]["platform"])) if times else None
    row = {
        "session_id": session_id,
        "first_activity_at": first[0] if first else None,
        "last_activity_at": max(t for t, _ in times) if times else None,
        "views": len(children["view"]),
        "clicks": len(children["click"]),
        "events": len(children["event"]),
    }
    if session is not None:
        row.update({k: session.get(k) for k in (
            "user_id", "platform", "session_start_time", "session_end_time", "device_type",
            "geo_location", "experiments_json", "source", "emitted_at", "copies")})
        row["has_session_record"] = True
    else:
        row.update({"user_id": None, "platform": first[1]["platform"], "session_start_time": first[0],
                    "session_end_time": None, "device_type": None, "geo_location": None,
                    "experiments_json": None, "source": None, "emitted_at": None, "copies": 0,
                    "has_session_record": False})
    row["session_date"] = contract.micros_to_date(row["session_start_time"])
    end = row["session_end_time"] if row["session_end_time"] is not None else row["last_activity_at"]
    row["duration_seconds"] = None if end is None else (end - row["session_start_time"]) / 1e6
    types = Counter(e["event_type"] for e in children["event"])
    row.update(browse_events=types["browse"], add_to_cart_events=types["add_to_cart"],
               payment_events=types["payment_successful"],
               furthest_stage_in_session=len(reached_stages(children["view"], children["event"], [], [])))
    return row


class JoinToSessionFn(beam.DoFn):
    def __init__(self):
        self._inferred = Metrics.counter("funnel", "sessions_inferred_without_record")

    def process(self, keyed):
        session_id, grouped = keyed
        sessions = list(grouped["session"])
        children = {kind: list(grouped[kind]) for kind in _CHILD_TABLE}
        session = resolve_session(session_id, sessions[0] if sessions else None, children)
        if not sessions:
            self._inferred.inc()
        yield beam.pvalue.TaggedOutput("silver_sessions", session)
        context = {"session_id": session_id, "user_id": session["user_id"], "platform": session["platform"]}
        for kind, rows in children.items():
            for child in rows:
                yield beam.pvalue.TaggedOutput(_CHILD_TABLE[kind], {**child, **context})


def unknown_parent_context(columns: tuple[str, ...]) -> dict:
    """The parent's columns when the parent is unknown: nulls, except that the
    child keeps its own platform."""
    return {c: None for c in columns if c != "platform"}


class AttachParentFn(beam.DoFn):
    """Children keyed by a parent id + the parent's context -> children with
    the parent's resolved columns (or their own platform when it is unknown)."""

    def __init__(self, context_columns: tuple[str, ...], counter: str):
        self._columns = context_columns
        self._orphans = Metrics.counter("funnel", counter)

    def process(self, keyed):
        _, grouped = keyed
        parents = list(grouped["parent"])
        if parents:
            context = parents[0]
        else:
            context = unknown_parent_context(self._columns)
        for child in grouped["child"]:
            if not parents:
                self._orphans.inc()
            yield {**child, **context}


class AttachParent(beam.PTransform):
    def __init__(self, child_key: str, parent_key: str, context_columns: tuple[str, ...], counter: str):
        super().__init__()
        self._child_key, self._parent_key, self._columns, self._counter = child_key, parent_key, context_columns, counter

    def expand(self, pcolls):
        children, parents = pcolls
        ck, pk, cols = self._child_key, self._parent_key, self._columns
        return ({"child": children | "KeyChild" >> beam.Map(lambda r: (r[ck], r)),
                 "parent": parents | "KeyParentContext" >> beam.Map(lambda r: (r[pk], {c: r[c] for c in cols}))}
                | "CoGroup" >> beam.CoGroupByKey()
                | "Attach" >> beam.ParDo(AttachParentFn(cols, self._counter)))


class BuildSilver(beam.PTransform):
    """``{bronze table: rows}`` -> ``{silver table: rows}``."""

    def expand(self, bronze: dict):
        current = {
            rt.name: bronze[rt.bronze_table] | f"Dedup_{rt.name}" >> DedupByIdentity(rt.name, BRONZE[rt.bronze_table])
            for rt in RECORD_TYPES.values()
        }
        by_session = (
            {kind: current[kind] | f"KeyBySession_{kind}" >> beam.Map(lambda r: (r["session_id"], r))
             for kind in ("session", "view", "click", "event")}
            | "CoGroupBySession" >> beam.CoGroupByKey()
            | "JoinToSession" >> beam.ParDo(JoinToSessionFn()).with_outputs("silver_sessions", *_CHILD_TABLE.values())
        )
        responses = ((current["event_response"], by_session["silver_events"])
                     | "ResponsesToEvents" >> AttachParent("event_id", "event_id",
                                                           ("session_id", "user_id", "platform"),
                                                           "responses_without_event"))
        activities = ((current["user_activity"], responses)
                      | "ActivitiesToResponses" >> AttachParent("response_id", "response_id",
                                                                ("event_id", "session_id", "user_id", "platform"),
                                                                "activities_without_response"))
        return {
            "silver_users": current["user"],
            "silver_sessions": by_session["silver_sessions"],
            **{name: by_session[name] for name in _CHILD_TABLE.values()},
            "silver_event_responses": responses,
            "silver_user_activity": activities,
        }
