"""Synthetic funnel data that follows the raw contract, messiness included.

    python -m pipelines.generate --users 20000 --days 7 --seed 42 --out DIR [--format jsonl|parquet]

Writes one landing file per arrival day (``raw_events_YYYY-MM-DD.jsonl``;
lines in a shuffled order) and ``manifest.json`` with the true values used,
so tests can check that the pipelines recover them. Same seed, same bytes.

What it produces, per the contract:

* journeys per session: views (and sometimes a ``browse`` event), add to
  cart, payment (per-variant probability: the A/B test's true effect), email
  confirmation moving through statuses, a barcode scan days later;
* two experiments per session: ``checkout_button`` (control / B, true
  effects per stage, optional sample-ratio skew) and ``banner_color`` (an
  A/A test); payments never confirmed; bursts of failed confirmations in one
  15-minute window (the manifest lists the alerts and the retargeting
  audience the plan must produce);
* anonymous sessions, sessions whose record never arrives, session end
  times in a second record, user profile updates (some arriving out of order);
* payment without cart, confirmation failed then resent, SMS confirmations;
* mixed timestamp formats, platform and event-type spellings (and a few
  records with no platform at all), schema v2
  records with extra fields;
* duplicates: redelivered lines, retried publishes (new ``emitted_at``),
  conflicting copies (same key, other content, always after the original);
* late arrivals (1-3 days) and a configurable share of invalid records of
  every dead-letter reason; each file's modification time is when it landed
  (5 minutes after its arrival day; a file of a day still to come: when written).

The truth in the manifest comes from the journeys the generator planned, not
from re-applying the funnel rules to the records.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone

import orjson

from schemas.contract import MAX_RECORD_BYTES
from schemas.vocabulary import STAGES

PLATFORM_SPELLINGS = {
    "web": ("web", "Web", "desktop", "Desktop", " browser ", "mobile-web"),
    "ios": ("ios", "iOS", "iPhone", "ipad", "ios-app"),
    "android": ("android", "Android", "android-app"),
    "email": ("email", "mailer", "Email"),
    "pos": ("pos", "POS", "scanner", "kiosk"),
}
EVENT_SPELLINGS = {
    "browse": ("browse", "Browse", "BROWSE"),
    "add_to_cart": ("add_to_cart", "Article added to cart", "ADD_TO_CART", "add-to-cart"),
    "payment_successful": ("payment_successful", "payment_success", "Payment Successful"),
    "search": ("search", "Search"),
}
CANONICAL_PLATFORM = {
    spelling: canonical for canonical, spellings in PLATFORM_SPELLINGS.items() for spelling in spellings
}
SOURCES = {"web": "web-app", "ios": "ios-app", "android": "android-app"}
COUNTRIES = ("ES", "DE", "FR", "IT", "NL", "GB", "US", "PT")
EXPERIMENT = "checkout_button"  # variants control / B: the true effect is in Config
AA_EXPERIMENT = "banner_color"  # variants A / B, even split, no effect: an A/A test
CONFIRMATION_DEADLINE = timedelta(minutes=30)
ALERT_WINDOW = timedelta(minutes=15)
# What a conflicting copy changes (content, not envelope): still a duplicate.
CONFLICTING_CONTENT = {
    "view": {"page_type": "conflict"},
    "click": {"element_clicked": "conflict"},
    "event": {"metadata": {"conflict": True}},
    "user_activity": {"location": "gate-conflict"},
}
INVALID_REASONS = (
    "invalid_json",
    "invalid_encoding",
    "unknown_record_type",
    "missing_field",
    "invalid_type",
    "invalid_timestamp",
    "timestamp_out_of_range",
    "invalid_value",
)


@dataclass
class Config:
    users: int = 20000
    days: int = 7
    seed: int = 42
    start: str = "2026-11-02"
    format: str = "jsonl"
    sessions_per_user_day: float = 0.2
    anonymous_share: float = 0.15
    no_browse_share: float = 0.03  # sessions with clicks only: reach no stage
    browse_event_share: float = 0.3
    p_cart: float = 0.35
    p_pay: dict = field(default_factory=lambda: {"control": 0.50, "B": 0.60})
    # The A/B test (checkout_button): variant B's share of sessions (0.5 = even
    # split; other values inject a sample-ratio mismatch) and its additive lift
    # of the cart probability; p_pay above is the payment stage's true effect.
    b_share: float = 0.5
    cart_lift: dict = field(default_factory=lambda: {"control": 0.0, "B": 0.0})
    payment_without_cart: float = 0.01  # of non-cart sessions: funnel stops at browse
    p_email_fail: float = 0.06
    p_unconfirmed: float = 0.01  # payments that never get a confirmation
    # Email failure bursts: sessions of random users paying within one
    # 15-minute window, their confirmations failing at burst_fail_rate.
    email_failure_bursts: int = 1
    burst_sessions: int = 40
    burst_fail_rate: float = 0.3
    p_resend: float = 0.7
    p_sms: float = 0.1
    p_scan: float = 0.75
    max_scan_lag_days: int = 12
    session_record_missing: float = 0.02
    session_end_update: float = 0.5
    profile_update: float = 0.1
    duplicate_share: float = 0.02  # redelivered lines, identical
    retry_share: float = 0.01  # immutable records re-published with a new emitted_at
    conflict_share: float = 0.002  # immutable keys re-sent with other content
    late_share: float = 0.03
    invalid_share: float = 0.005
    v2_share: float = 0.02
    platform_missing: float = 0.01
    # Weekly seasonality: sessions per user-day times the factor of the weekday (Monday first),
    # and on-sale days (ISO date -> factor): clean data the checks must not alarm on.
    weekday_factors: tuple = (1.0,) * 7
    on_sale: dict = field(default_factory=dict)
    # Journeys across sessions: a user whose session browsed without paying comes back, with this
    # probability, a whole number of days later drawn from return_days (inside a 7-day window or
    # past it) in a new session that carts at p_return_cart. 0: no planned returns (the default data).
    p_return: float = 0.0
    return_days: tuple = (1, 10)
    p_return_cart: float = 0.7
    # Injected defects (DEFECTS), each {"kind", "day" (ISO date), and "platform"/"share" as it needs};
    # the manifest lists the checks each must fail.
    defects: list = field(default_factory=list)


# What each defect does, and the checks it fails (schemas.quality ids; subject fields to match).
DEFECTS = {
    # a platform's apps send nothing for a day: no session, and what they held arrives the next day
    "platform_silent": "no session on `platform` that day, nothing from it arrives that day",
    # a broken page tag: `share` of the web page views of that day are never sent
    "volume_drop": "`share` of that day's web views not sent",
    # a producer bug: `share` of that day's views arrive without their session_id (dead-lettered)
    "null_key_burst": "`share` of that day's views without session_id",
    # an app release: from that day `share` of web events are schema version 3 with a new field
    "schema_drift": "`share` of web events from that day on are v3 with payload.checkout_flow",
    # a backlog: `share` of that day's records (every type) arrive `delay_days` (default 5) days late,
    # after gold was released once: gold's next release revises that day (ops/metric_revisions)
    "late_wave": "`share` of that day's records arrive `delay_days` late",
    # the producers stop for `seconds` once that day's records are published (the records are
    # unchanged; simulator.publisher.stream_plan pauses there): the stream's stall check fails
    "stream_stall": "publishing stops for `seconds` after that day's file",
}
_VOLUME_TABLES = ("bronze_sessions", "bronze_views", "bronze_events")


def _micros(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


class Generator:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.start = datetime.combine(date.fromisoformat(cfg.start), datetime.min.time(), tzinfo=UTC)
        self.records = []  # (arrival datetime, order, record dict, record_type, key)
        self.conflicts = []  # appended after the original in its arrival file
        self.truth_sessions = []
        self.truth_payments = []  # {event_id, paid_at, confirmed_at}: confirmation_missing truth
        self.truth_failures = []  # (response_id, failed_at): email_failed truth
        self.burst_windows = []  # window starts: email_failure_rate truth
        self.counters = Counter()
        self._seq = 0
        self.defects = {d["kind"]: d for d in cfg.defects}
        unknown = set(self.defects) - set(DEFECTS)
        if unknown:
            raise ValueError(f"unknown defects {sorted(unknown)}; known: {sorted(DEFECTS)}")
        self.defect_invalid = Counter()  # reason -> records a defect made invalid
        # user_id -> [(micros, stage, session_id)]: the stage records of the user's sessions
        # (browse, cart, pay, confirm, scan), the truth of the funnels across sessions
        self.journal = defaultdict(list)
        self.returns = defaultdict(list)  # day -> users coming back that day

    # --- rendering helpers (format messiness) ---------------------------------------
    def ts(self, dt: datetime, allow_int: bool = True):
        r = self.rng.random()
        if r < 0.5 or (self.cfg.format == "parquet" and not allow_int):
            return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
        if r < 0.7:
            offset = self.rng.choice((1, 2, -5))
            local = dt.astimezone(timezone(timedelta(hours=offset)))
            return local.isoformat(timespec="milliseconds")
        if r < 0.85 or not allow_int:
            return dt.replace(tzinfo=None).isoformat(timespec="milliseconds")
        return _micros(dt) // 1000

    def platform(self, canonical: str) -> str:
        return self.rng.choice(PLATFORM_SPELLINGS[canonical])

    def emit(
        self,
        record_type: str,
        key: str,
        payload: dict,
        platform: str,
        source: str,
        emitted: datetime,
        late_ok: bool = True,
        arrival: datetime | None = None,
    ):
        version = 2 if self.rng.random() < self.cfg.v2_share else 1
        if version == 2:
            payload = {**payload, "app_build": f"7.{self.rng.randint(0, 9)}.{self.rng.randint(0, 9)}"}
        payload, version, dropped = self._defect(record_type, payload, platform, emitted, version)
        if dropped:
            return None, arrival or emitted
        record = {
            "record_type": record_type,
            "schema_version": version,
            "source": source,
            "platform": self.platform(platform),
            "emitted_at": self.ts(emitted, allow_int=False),
            "payload": payload,
        }
        if self.rng.random() < self.cfg.platform_missing:
            del record["platform"]  # normalizes to 'unknown'
        if self.rng.random() < 0.7:
            record["region"] = self.rng.choice(("eu-west-1", "us-east-1"))
        arrival = arrival or emitted
        wave = self.defects.get("late_wave")
        if late_ok and self.rng.random() < self.cfg.late_share:
            arrival += timedelta(days=self.rng.randint(1, 3), seconds=self.rng.randint(0, 3600))
            self.counters["late_records"] += 1
        elif wave and emitted.date().isoformat() == wave["day"] and self.rng.random() < wave["share"]:
            arrival += timedelta(days=wave.get("delay_days", 5))
            self.counters["defect_late_wave_records"] += 1
        self._add(arrival, record, record_type, key)
        return record, arrival

    def _defect(self, record_type: str, payload: dict, platform: str, emitted: datetime, version: int):
        """-> (payload, schema version, dropped): what the injected defects do to one record."""
        day, rng = emitted.date().isoformat(), self.rng
        drop = self.defects.get("volume_drop")
        if drop and record_type == "view" and platform == "web" and day == drop["day"] and rng.random() < drop["share"]:
            self.counters["defect_views_not_sent"] += 1
            return payload, version, True
        burst = self.defects.get("null_key_burst")
        if burst and record_type == "view" and day == burst["day"] and rng.random() < burst["share"]:
            self.defect_invalid["missing_field"] += 1
            return {**payload, "session_id": None}, version, False
        drift = self.defects.get("schema_drift")
        web_event = record_type == "event" and platform == "web"
        if drift and web_event and day >= drift["day"] and rng.random() < drift["share"]:
            self.counters["defect_v3_events"] += 1
            return {**payload, "checkout_flow": "one_page"}, 3, False
        return payload, version, False

    def _add(self, arrival, record, record_type, key):
        silent = self.defects.get("platform_silent")
        held = silent and CANONICAL_PLATFORM.get(record.get("platform")) == silent["platform"]
        if held and arrival.date().isoformat() == silent["day"]:
            # sent when the apps are back, early the next day
            next_day = datetime.combine(arrival.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
            arrival = next_day + timedelta(seconds=self.rng.randint(0, 3599))
            self.counters["defect_records_held"] += 1
        self._seq += 1
        self.records.append((arrival, self._seq, record, record_type, key))

    # --- the world ------------------------------------------------------------------------
    def run(self):
        cfg, rng = self.cfg, self.rng
        users = self.users = [self.make_user(i) for i in range(cfg.users)]
        n_sessions = 0
        for day in range(cfg.days):
            when = (self.start + timedelta(days=day)).date()
            rate = (
                cfg.sessions_per_user_day * cfg.weekday_factors[when.weekday()] * cfg.on_sale.get(when.isoformat(), 1)
            )
            for u in users:
                if rng.random() < rate:
                    n_sessions += 1
                    self.session(f"s-{n_sessions:07d}", u, day)
            for _ in range(int(cfg.users * rate * cfg.anonymous_share)):
                n_sessions += 1
                self.session(f"s-{n_sessions:07d}", None, day)
            for u in self.returns.pop(day, []):
                n_sessions += 1
                self.session(f"s-{n_sessions:07d}", u, day, returning=True)
        for burst in range(cfg.email_failure_bursts if users else 0):
            # a window in the middle of a day, aligned as the alert's windows are
            day = rng.randrange(cfg.days)
            window = self.start + timedelta(days=day, hours=10 + 3 * (burst % 4)) + ALERT_WINDOW * rng.randrange(4)
            self.burst_windows.append(window)
            for _ in range(cfg.burst_sessions):
                n_sessions += 1
                self.session(f"s-{n_sessions:07d}", rng.choice(users), day, burst_at=window)
        for u in users:
            self.emit_user(u)
        self.add_duplicates()
        invalid = self.make_invalid()
        return self.write_plan(invalid)

    def make_user(self, i: int) -> dict:
        rng = self.rng
        platform = rng.choice(("web", "web", "ios", "android"))
        return {
            "user_id": f"u-{i:06d}",
            "platform": platform,
            "country": rng.choice(COUNTRIES),
            "email": f" User{i}.Name@Example.com " if i % 3 == 0 else f"user{i}@example.com",
            "phone": f"+34 6{i:08d}"[:15],
            "signup": self.start - timedelta(days=rng.randint(1, 900)),
            "first_session": None,
            "is_active": rng.random() < 0.92,
        }

    def emit_user(self, u: dict):
        rng = self.rng
        first = u["first_session"] or (self.start + timedelta(hours=rng.randint(0, self.cfg.days * 24 - 1)))
        created = first - timedelta(minutes=rng.randint(1, 600))
        profile = {
            "user_id": u["user_id"],
            "email": u["email"],
            "phone_number": u["phone"],
            "country": u["country"].lower() if rng.random() < 0.3 else u["country"],
            "is_active": u["is_active"],
            "signup_date": u["signup"].date().isoformat(),
            "updated_at": self.ts(created),
        }
        _, arrival = self.emit("user", u["user_id"], profile, u["platform"], "accounts-api", created, late_ok=False)
        if rng.random() < self.cfg.profile_update:
            updated = created + timedelta(hours=rng.randint(1, 48))
            u["country"] = rng.choice(COUNTRIES)
            u["is_active"] = not u["is_active"] if rng.random() < 0.3 else u["is_active"]
            newer = {**profile, "country": u["country"], "is_active": u["is_active"], "updated_at": self.ts(updated)}
            # A third of updates arrive before the version they replace.
            out_of_order = rng.random() < 0.33
            self.emit(
                "user",
                u["user_id"],
                newer,
                u["platform"],
                "accounts-api",
                updated,
                late_ok=False,
                arrival=created - timedelta(minutes=5) if out_of_order else None,
            )
            self.counters["user_updates_out_of_order"] += out_of_order
        self.counters["users_with_record"] += 1

    def session(
        self, session_id: str, user: dict | None, day: int, burst_at: datetime | None = None, returning: bool = False
    ):
        """One session's records. ``burst_at``: a failure burst's window: the
        session browses, carts and pays within its first minutes, and its
        confirmation fails at ``burst_fail_rate``. ``returning``: a planned
        return (``p_return``): it carts at ``p_return_cart``."""
        cfg, rng = self.cfg, self.rng
        platform = user["platform"] if user and rng.random() < 0.8 else rng.choice(("web", "ios", "android"))
        silent = self.defects.get("platform_silent")
        day_iso = (self.start + timedelta(days=day)).date().isoformat()
        if silent and burst_at is None and platform == silent["platform"] and day_iso == silent["day"]:
            self.counters["defect_sessions_not_sent"] += 1
            return
        source = SOURCES[platform]
        if burst_at is None:
            t0 = self.start + timedelta(days=day, seconds=rng.randint(0, 86399), milliseconds=rng.randint(0, 999))
        else:
            t0 = burst_at + timedelta(seconds=rng.randint(0, 240), milliseconds=rng.randint(0, 999))
        if user and (user["first_session"] is None or t0 < user["first_session"]):
            user["first_session"] = t0
        variant = "B" if rng.random() < cfg.b_share else "control"
        aa_variant = rng.choice(("A", "B"))
        has_record = burst_at is not None or rng.random() >= cfg.session_record_missing
        truth = {
            "session_id": session_id,
            "user_id": user["user_id"] if user and has_record else None,
            "platform": platform,
            "variant": variant,
            "aa_variant": aa_variant,
            "has_record": has_record,
            "stages": 0,
            "carts": [],
            "payments": [],
        }
        child_times = []
        t = t0

        def note(stage: str, at: datetime):
            if truth["user_id"] is not None:  # a session without its record has no user in silver
                self.journal[truth["user_id"]].append((_micros(at), stage, session_id))

        if has_record:
            self.emit(
                "session",
                session_id,
                {
                    "session_id": session_id,
                    "user_id": user["user_id"] if user else None,
                    "session_start_time": self.ts(t0),
                    "device_type": "desktop" if platform == "web" else "mobile",
                    "geo_location": user["country"] if user else rng.choice(COUNTRIES + ("40.4,-3.7",)),
                    "experiments": {EXPERIMENT: variant, AA_EXPERIMENT: aa_variant},
                },
                platform,
                source,
                t0 + timedelta(seconds=1),
            )

        def event(event_type, at, metadata=None):
            event_id = f"e-{session_id[2:]}-{self._next()}"
            self.emit(
                "event",
                event_id,
                {
                    "event_id": event_id,
                    "event_type": rng.choice(EVENT_SPELLINGS[event_type]),
                    "session_id": session_id,
                    "timestamp": self.ts(at),
                    "metadata": metadata or {},
                },
                platform,
                "checkout-api" if event_type == "payment_successful" else source,
                at + timedelta(milliseconds=rng.randint(10, 2000)),
            )
            child_times.append(at)
            if event_type == "browse":
                note("browse", at)
            elif event_type == "add_to_cart":
                truth["carts"].append((at, metadata["article_id"], metadata["price"]))
                note("cart", at)
            elif event_type == "payment_successful":
                truth["payments"].append(at)
                note("pay", at)
            return event_id

        browses = burst_at is not None or rng.random() >= cfg.no_browse_share
        for v in range(rng.randint(1, 5) if browses else 0):
            t += timedelta(seconds=rng.randint(2, 90) if burst_at is None else rng.randint(2, 20))
            view_id = f"v-{session_id[2:]}-{v}"
            self.emit(
                "view",
                view_id,
                {
                    "view_id": view_id,
                    "session_id": session_id,
                    "view_timestamp": self.ts(t),
                    "page_type": rng.choice(("landing", "event", "checkout")),
                    "landing_page": f"/tickets/concert-{rng.randint(1, 60)}",
                    "is_referral": rng.random() < 0.2,
                },
                platform,
                source,
                t + timedelta(seconds=1),
            )
            child_times.append(t)
            note("browse", t)
        for c in range(rng.randint(1 if not browses else 0, 4)):
            ct = t0 + timedelta(seconds=rng.randint(5, 600))
            click_id = f"c-{session_id[2:]}-{c}"
            self.emit(
                "click",
                click_id,
                {
                    "click_id": click_id,
                    "session_id": session_id,
                    "click_timestamp": self.ts(ct),
                    "element_clicked": rng.choice(("buy-button", "add-to-cart-button", "nav")),
                    "page": "/tickets",
                },
                platform,
                source,
                ct + timedelta(seconds=1),
            )
            child_times.append(ct)
        if browses and rng.random() < cfg.browse_event_share:
            event("browse", t0 + timedelta(seconds=rng.randint(1, 30)))
        if browses:
            truth["stages"] = 1
            if rng.random() < 0.1:
                event("search", t + timedelta(seconds=5), {"query": "concert"})
        article = f"a-{rng.randint(1, 200)}"
        price = float(rng.choice((19.0, 35.5, 59.0, 120.0)))
        p_cart = cfg.p_return_cart if returning else cfg.p_cart + cfg.cart_lift.get(variant, 0.0)
        carted = burst_at is not None or (browses and rng.random() < p_cart)
        if carted:
            t += timedelta(seconds=rng.randint(5, 300) if burst_at is None else rng.randint(5, 30))
            for _ in range(rng.randint(1, 2)):
                event("add_to_cart", t, {"article_id": article, "price": price, "currency": "EUR"})
            truth["stages"] = 2
        elif browses and rng.random() < cfg.payment_without_cart:
            paid_at = t + timedelta(seconds=60)
            payment_id = event(
                "payment_successful", paid_at, {"order_id": f"o-{session_id}", "price": price, "currency": "EUR"}
            )
            self.truth_payments.append({"event_id": payment_id, "paid_at": paid_at, "confirmed_at": None})
            self.counters["payments_without_cart"] += 1
        if carted and (burst_at is not None or rng.random() < cfg.p_pay[variant]):
            t += timedelta(seconds=rng.randint(30, 900) if burst_at is None else rng.randint(10, 60))
            payment_id = event(
                "payment_successful", t, {"order_id": f"o-{session_id}", "price": price, "currency": "EUR"}
            )
            truth["stages"] = 3
            truth["stages"] = self.confirm_and_scan(
                session_id,
                user,
                payment_id,
                t,
                truth["stages"],
                cfg.burst_fail_rate if burst_at is not None else cfg.p_email_fail,
                note,
            )
        end = max(child_times, default=t0) + timedelta(seconds=rng.randint(10, 120))
        if has_record and rng.random() < cfg.session_end_update:
            self.emit(
                "session",
                session_id,
                {"session_id": session_id, "session_start_time": self.ts(t0), "session_end_time": self.ts(end)},
                platform,
                source,
                end + timedelta(seconds=1),
            )
        truth["session_date"] = (t0 if has_record else min(child_times)).date().isoformat()
        self.truth_sessions.append(truth)
        # (p_return first: the default data draws nothing here)
        comes_back = cfg.p_return and truth["user_id"] and not returning and truth["stages"] in (1, 2)
        if comes_back and rng.random() < cfg.p_return:
            later = day + rng.randint(*cfg.return_days)
            if later < cfg.days:
                self.returns[later].append(user)
                self.counters["returns_planned"] += 1

    def confirm_and_scan(self, session_id, user, payment_id, paid_at, stages, p_fail: float, note) -> int:
        cfg, rng = self.cfg, self.rng
        payment = {"event_id": payment_id, "paid_at": paid_at, "confirmed_at": None}
        self.truth_payments.append(payment)
        email = user["email"] if user else f"guest-{session_id}@example.com"

        def response(response_id, statuses, at, response_type="email_confirmation"):
            sent_at = None
            for status in statuses:
                at = at + timedelta(seconds=rng.randint(5, 60))
                if status == "sent":
                    sent_at = at
                payload = {
                    "response_id": response_id,
                    "event_id": payment_id,
                    "response_type": response_type,
                    "status": status,
                    "sent_at": self.ts(sent_at) if sent_at else None,
                }
                if response_type == "email_confirmation":
                    payload["sent_email"] = email
                else:
                    payload["sent_phone_number"] = user["phone"] if user else "+34 600 000 000"
                self.emit("event_response", response_id, payload, "email", "mailer", at)
            return sent_at, at

        if rng.random() < cfg.p_sms:
            response(f"r-{session_id[2:]}-sms", ("queued", "sent"), paid_at, "sms_confirmation")
        if rng.random() < cfg.p_unconfirmed:
            self.counters["payments_unconfirmed"] += 1
            return stages
        confirmed = f"r-{session_id[2:]}-1"
        if rng.random() < p_fail:
            _, failed_at = response(confirmed, ("queued", rng.choice(("failed", "bounced"))), paid_at)
            self.truth_failures.append((confirmed, failed_at))
            self.counters["emails_failed"] += 1
            if rng.random() >= cfg.p_resend:
                return stages
            confirmed = f"r-{session_id[2:]}-2"
            self.counters["emails_resent"] += 1
            sent_at, _ = response(confirmed, ("sent", "delivered"), paid_at + timedelta(minutes=10))
        else:
            sent_at, _ = response(confirmed, ("queued", "sent", "delivered"), paid_at)
        payment["confirmed_at"] = sent_at
        note("confirm", sent_at)
        stages = 4
        if rng.random() < cfg.p_scan:
            scan_at = sent_at + timedelta(days=rng.randint(0, cfg.max_scan_lag_days), seconds=rng.randint(60, 7200))
            activity_id = f"ua-{session_id[2:]}"
            self.emit(
                "user_activity",
                activity_id,
                {
                    "activity_id": activity_id,
                    "response_id": confirmed,
                    "activity_type": "barcode_scanned",
                    "activity_time": self.ts(scan_at),
                    "location": f"gate-{rng.randint(1, 8)}",
                },
                "pos",
                "scanner",
                scan_at + timedelta(seconds=3),
            )
            note("scan", scan_at)
            stages = 5
        return stages

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    # --- duplicates and invalid records ---------------------------------------------------------
    def add_duplicates(self):
        cfg, rng = self.cfg, self.rng
        originals = list(self.records)
        for arrival, _, record, record_type, key in originals:
            r = rng.random()
            if r < cfg.duplicate_share:
                self._add(arrival + timedelta(seconds=rng.randint(0, 600)), record, record_type, key)
                self.counters["duplicate_redeliveries"] += 1
            elif record_type in ("view", "click", "event", "user_activity"):
                if r < cfg.duplicate_share + cfg.retry_share:
                    retry = {**record, "emitted_at": self.ts(arrival + timedelta(seconds=30), allow_int=False)}
                    self._add(arrival + timedelta(seconds=30), retry, record_type, key)
                    self.counters["duplicate_retries"] += 1
                elif r < cfg.duplicate_share + cfg.retry_share + cfg.conflict_share:
                    payload = {**record["payload"], **CONFLICTING_CONTENT[record_type]}
                    self.conflicts.append((arrival, {**record, "payload": payload}, record_type))
                    self.counters[f"conflicts_{record_type}"] += 1

    def make_invalid(self) -> list[tuple[datetime, str, object]]:
        cfg, rng = self.cfg, self.rng
        n = int(len(self.records) * cfg.invalid_share)
        reasons = [r for r in INVALID_REASONS if not (cfg.format == "parquet" and r == "invalid_encoding")]
        out = []
        for i in range(n):
            reason = reasons[i % len(reasons)]
            at = self.start + timedelta(seconds=rng.randint(0, cfg.days * 86400 - 1))
            view = {
                "record_type": "view",
                "schema_version": 1,
                "source": "web-app",
                "platform": "web",
                "payload": {"view_id": f"bad-{i}", "session_id": "s-bad", "view_timestamp": self.ts(at)},
            }
            if reason == "invalid_json":
                bad = (
                    b'{"record_type": "view", "payload": {'
                    if cfg.format == "jsonl"
                    else {**view, "payload": "{not json"}
                )
            elif reason == "invalid_encoding":
                bad = b'{"record_type": "view", "source": "web-app\xff\xfe"}'
            elif reason == "unknown_record_type":
                bad = {**view, "record_type": "refund"}
            elif reason == "missing_field":
                bad = {**view, "payload": {"view_id": f"bad-{i}", "session_id": "s-bad"}}
            elif reason == "invalid_type":
                bad = {**view, "payload": {**view["payload"], "is_referral": "yes"}}
            elif reason == "invalid_timestamp":
                bad = {**view, "payload": {**view["payload"], "view_timestamp": "yesterday"}}
            elif reason == "timestamp_out_of_range":
                bad = {
                    **view,
                    "payload": {**view["payload"], "view_timestamp": "2099-01-01T00:00:00Z" if i % 2 else 915148800000},
                }
            else:
                bad = {
                    "record_type": "event_response",
                    "schema_version": 1,
                    "source": "mailer",
                    "payload": {
                        "response_id": f"bad-{i}",
                        "event_id": "e-x",
                        "response_type": "email_confirmation",
                        "sent_email": "someone@example.com",
                        "status": "opened",
                    },
                }
            out.append((at, reason, bad))
        if n:
            big = {
                "record_type": "view",
                "schema_version": 1,
                "source": "web-app",
                "payload": {
                    "view_id": "bad-big",
                    "session_id": "s-bad",
                    "view_timestamp": self.ts(self.start),
                    "blob": "x" * (MAX_RECORD_BYTES + 10),
                },
            }
            out.append((self.start, "oversized", big))
        return out

    # --- files and manifest ---------------------------------------------------------------------
    def write_plan(self, invalid):
        by_day = defaultdict(list)
        for arrival, seq, record, _, _ in self.records:
            by_day[arrival.date()].append((seq, record))
        for arrival, _reason, bad in invalid:
            by_day[arrival.date()].append((self._next(), bad))
        files = {}
        for day in sorted(by_day):
            lines = by_day[day]
            self.rng.shuffle(lines)  # out of order within a file
            files[day] = [rec for _, rec in lines]
        for arrival, record, _ in self.conflicts:
            files[arrival.date()].append(record)  # after the original: the first copy wins
        return files, invalid


def _encode(record) -> bytes:
    return record if isinstance(record, bytes) else orjson.dumps(record)


def build_manifest(gen: Generator, files: dict, invalid: list) -> dict:
    cfg = gen.cfg
    sessions = gen.truth_sessions
    per_stage = [sum(1 for s in sessions if s["stages"] >= n) for n in range(1, 6)]
    per_day = defaultdict(lambda: [0] * 5)
    for s in sessions:
        for n in range(s["stages"]):
            per_day[s["session_date"]][n] += 1
    variants, aa_variants = {}, {}
    for v in ("control", "B"):
        vs = [s for s in sessions if s["variant"] == v and s["has_record"]]
        variants[v] = {
            "sessions": len(vs),
            "carted": sum(1 for s in vs if s["stages"] >= 2),
            "paid": sum(1 for s in vs if s["stages"] >= 3),
            "true_checkout_rate": cfg.p_pay[v],
            "true_cart_rate": round(cfg.p_cart + cfg.cart_lift.get(v, 0.0), 6),
        }
    for v in ("A", "B"):
        vs = [s for s in sessions if s["aa_variant"] == v and s["has_record"]]
        aa_variants[v] = {"sessions": len(vs), "paid": sum(1 for s in vs if s["stages"] >= 3)}
    invalid_by_reason = Counter(reason for _, reason, _ in invalid) + gen.defect_invalid
    unique = Counter()
    seen = set()
    for _, _, _, record_type, key in gen.records:
        if (record_type, key) not in seen:
            seen.add((record_type, key))
            unique[record_type] += 1
    total_lines = sum(len(v) for v in files.values())
    return {
        "config": asdict(cfg),
        "files": len(files),
        "records_total": total_lines,
        "records_invalid": sum(invalid_by_reason.values()),
        "records_valid": total_lines - sum(invalid_by_reason.values()),
        "invalid_by_reason": dict(sorted(invalid_by_reason.items())),
        "unique_identities": dict(sorted(unique.items())),
        "sessions": len(sessions),
        "sessions_without_record": sum(1 for s in sessions if not s["has_record"]),
        "sessions_anonymous": sum(1 for s in sessions if s["user_id"] is None),
        "users_with_sessions": len({s["user_id"] for s in sessions if s["user_id"]}),
        "sessions_per_stage": dict(zip(STAGES, per_stage)),
        "sessions_per_stage_by_day": {d: dict(zip(STAGES, c)) for d, c in sorted(per_day.items())},
        "ab_test": {
            "experiment": EXPERIMENT,
            "variants": variants,
            "b_share": cfg.b_share,
            "true_effect_checkout_rate": round(cfg.p_pay["B"] - cfg.p_pay["control"], 6),
            "true_effect_cart_rate": round(cfg.cart_lift.get("B", 0.0) - cfg.cart_lift.get("control", 0.0), 6),
        },
        "aa_test": {"experiment": AA_EXPERIMENT, "variants": aa_variants},
        "alerts": alert_truth(gen),
        "retargeting_users": retargeting_truth(gen),
        "user_journeys_7d": journey_truth(gen, days=7),
        "true_rates": {"cart_rate": cfg.p_cart, "p_scan": cfg.p_scan},
        "counters": dict(sorted(gen.counters.items())),
        "defects": [
            {
                **d,
                "fails": defect_failures(d),
                "may_fail": defect_may_fail(d),
                "stream_fails": defect_stream_failures(d),
            }
            for d in cfg.defects
        ],
    }


def journey_truth(gen: Generator, days: int) -> dict:
    """The contract's stages across each user's sessions, every step within
    ``days`` of the user's entry (the packaged funnel ``journey_7d``), from
    the plan's stage records: per entry number (a user enters at their first
    browse, and again at the first browse after a window closed), the
    entries reaching each stage; and how many entries reached a stage in
    another session than their entry's."""
    window = days * 86_400_000_000
    by_entry: dict[int, Counter] = defaultdict(Counter)
    spanning = 0
    for notes in gen.journal.values():
        times = defaultdict(list)
        for at, stage, session_id in notes:
            times[stage].append((at, session_id))
        browses = sorted(times["browse"])
        if not browses:
            continue
        entries = [browses[0]]
        for browse in browses:
            if browse[0] >= entries[-1][0] + window:
                entries.append(browse)
        for number, (entry, session_id) in enumerate(entries, start=1):
            reached = [(entry, session_id)]
            # cart and payment after the step before; a confirmation and a scan from the entry on
            for stage, after_previous in (("cart", True), ("pay", True), ("confirm", False), ("scan", False)):
                low = reached[-1][0] if after_previous else entry
                inside = [(at, s) for at, s in times[stage] if low <= at <= entry + window]
                if not inside:
                    break
                reached.append(min(inside))
            for k in range(len(reached)):
                by_entry[number][STAGES[k]] += 1
            spanning += len({s for _, s in reached}) > 1
    return {
        "window_days": days,
        "by_entry": {str(n): dict(c) for n, c in sorted(by_entry.items())},
        "entries_across_sessions": spanning,
        "returns_planned": gen.counters["returns_planned"],
    }


def defect_may_fail(defect: dict) -> list[dict]:
    """Checks a defect may fail besides its own, as the journeys fall: a
    late wave's later-day children (responses, scans) whose parent is in the
    wave, until it arrives."""
    if defect["kind"] != "late_wave":
        return []
    day = date.fromisoformat(defect["day"])
    days = [(day + timedelta(days=n)).isoformat() for n in range(defect.get("delay_days", 5) + 1)]
    checks = (
        "silver_event_responses.relationship.event_id->silver_events",
        "silver_user_activity.relationship.response_id->silver_event_responses",
    )
    return [{"check_id": c, "event_date": d} for c in checks for d in days]


def defect_failures(defect: dict) -> list[dict]:
    """The check results a defect must fail, and no other: ``check_id`` and
    what the result's subject holds (``event_date``, ``platform``, the
    landing file's name). Planned from what the defect does, not from the rules."""
    day, kind = defect["day"], defect["kind"]
    if kind == "platform_silent":  # fewer rows on that platform, so also a different platform mix
        return [
            {"check_id": f"{t}.volume", "event_date": day, "platform": defect["platform"]} for t in _VOLUME_TABLES
        ] + [{"check_id": f"{t}.mix.platform", "event_date": day} for t in _VOLUME_TABLES]
    if kind == "volume_drop":
        return [
            {"check_id": "bronze_views.volume", "event_date": day, "platform": "web"},
            {"check_id": "bronze_views.mix.platform", "event_date": day},
        ]
    if kind == "null_key_burst":  # dead-lettered in the landing file of that day
        return [
            {"check_id": "dead_letter.dead_letter_share", "source_file": f"raw_events_{day}", "reason": "missing_field"}
        ]
    if kind == "late_wave":  # while the wave is outstanding, that day's children miss their parents
        return [
            {"check_id": f"{t}.relationship.session_id->silver_sessions[has_session_record]", "event_date": day}
            for t in ("silver_views", "silver_events")
        ] + [{"check_id": "silver_event_responses.relationship.event_id->silver_events", "event_date": day}]
    if kind == "schema_drift":
        return [{"check_id": "bronze_events.schema_drift", "event_date": day}]
    return []  # stream_stall: the records are the same, only their publishing pauses


def defect_stream_failures(defect: dict) -> list[dict]:
    """The stream health results a defect must fail, and no other, when the
    landing files are published in day order (``simulator.publisher.stream_plan``)
    at a pace that gives every day several health windows: a silent platform
    is silent in the windows its day is published in, a stall is a stall.
    Drops short of zero, nulls, drift and late waves are the batch's to judge."""
    if defect["kind"] == "platform_silent":
        return [{"check_id": "raw_messages.stream_volume", "platform": defect["platform"]}]
    if defect["kind"] == "stream_stall":
        return [{"check_id": "raw_messages.stream_freshness"}]
    return []


def alert_truth(gen: Generator) -> dict:
    """The alerts the planned journeys must raise (TABLES_AND_METRICS.md, ``ops_alerts``)."""
    missing = [
        p["event_id"]
        for p in gen.truth_payments
        if p["confirmed_at"] is None or p["confirmed_at"] - p["paid_at"] > CONFIRMATION_DEADLINE
    ]
    return {
        "email_failed": sorted(r for r, _ in gen.truth_failures),
        "confirmation_missing": sorted(missing),
        "email_failure_burst_windows": sorted(w.isoformat() for w in gen.burst_windows),
    }


def retargeting_truth(gen: Generator) -> list[str]:
    """Active users whose latest add-to-cart (in a session that names them) has
    no payment by them within 24 hours after it."""
    carts, payments = defaultdict(list), defaultdict(list)
    for s in gen.truth_sessions:
        if s["user_id"]:
            carts[s["user_id"]] += [at for at, _, _ in s["carts"]]
            payments[s["user_id"]] += s["payments"]
    active = {u["user_id"] for u in gen.users if u["is_active"]}
    out = []
    for user_id, times in carts.items():
        if not times:
            continue
        last = max(times)
        if user_id in active and not any(last <= paid <= last + timedelta(hours=24) for paid in payments[user_id]):
            out.append(user_id)
    return sorted(out)


LANDS_AFTER_DAY = timedelta(minutes=5)  # a day's landing file is delivered just after midnight


def write_files(out: str, fmt: str, files: dict) -> list[str]:
    os.makedirs(out, exist_ok=True)
    paths = []
    for day, records in files.items():
        if fmt == "jsonl":
            path = os.path.join(out, f"raw_events_{day.isoformat()}.jsonl")
            with open(path, "wb") as f:
                for record in records:
                    f.write(_encode(record) + b"\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            path = os.path.join(out, f"raw_events_{day.isoformat()}.parquet")
            columns = ("record_type", "schema_version", "source", "platform", "region", "emitted_at")
            rows = [
                {
                    **{c: r.get(c) for c in columns},
                    "payload": r["payload"] if isinstance(r["payload"], str) else json.dumps(r["payload"]),
                }
                for r in records
            ]
            pq.write_table(pa.Table.from_pylist(rows), path)
        # The file lands when its arrival day is over (its modification time is its landing time,
        # transforms.lake.landing.landed_at); a day still to come lands when written.
        landed = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC) + LANDS_AFTER_DAY
        if landed.timestamp() < time.time():
            os.utime(path, (landed.timestamp(), landed.timestamp()))
        paths.append(path)
    return paths


def generate(cfg: Config, out: str) -> dict:
    gen = Generator(cfg)
    files, invalid = gen.run()
    write_files(out, cfg.format, files)
    manifest = build_manifest(gen, files, invalid)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    return manifest
