"""Every table of the lakehouse, defined once (see ``schemas.table``).

Layers: raw -> bronze -> silver -> gold, plus the dead letter. Column names
of gold tables follow TABLES_AND_METRICS.md exactly.
"""

from __future__ import annotations

from dataclasses import replace

from schemas.quality import (
    AcceptedValues,
    DeadLetterShare,
    Freshness,
    Mix,
    Relationship,
    RowCountChange,
    Sanity,
    SchemaDrift,
    Severity,
    StreamFreshness,
    StreamVolume,
    Volume,
    key_checks,
)
from schemas.table import BOOL, BYTES, DATE, FLOAT64, INT64, STRING, TIMESTAMP, Table, col
from schemas.vocabulary import (
    APP_PLATFORMS,
    ActivityType,
    Layer,
    Platform,
    ResponseStatus,
    ResponseType,
    Stage,
)

_APPS = tuple(str(p) for p in APP_PLATFORMS)

# --- raw ---------------------------------------------------------------------------
RAW = Table(
    "raw_messages",
    Layer.RAW,
    "Every received message byte for byte, with ingest metadata. Never rewritten.",
    (
        col("ingest_date", DATE, "UTC date the message was ingested (partition).", True),
        col("message_id", STRING, "Pub/Sub message id; null for file ingest."),
        col("publish_time", TIMESTAMP, "Pub/Sub publish time; null for file ingest."),
        col("attributes_json", STRING, "Pub/Sub attributes as a JSON object."),
        col("ingested_at", TIMESTAMP, "When the pipeline received the message.", True),
        col("source_file", STRING, "Landing file the record came from; null for Pub/Sub."),
        col("source_line", INT64, "1-based line (or row) number in source_file."),
        col("data", BYTES, "The message body exactly as received.", True),
    ),
    partition_by=("ingest_date",),
    # the stream's own health, judged by the streaming job as messages arrive (or stop arriving)
    checks=(StreamFreshness(), StreamVolume(platforms=_APPS)),
)

# --- shared column groups -----------------------------------------------------------
_INGEST = (
    col("ingested_at", TIMESTAMP, "When the pipeline received the record.", True),
    col("source_file", STRING, "Landing file of the record; null for Pub/Sub."),
    col("source_line", INT64, "Line (or row) number in source_file."),
    col("message_id", STRING, "Pub/Sub message id; null for file ingest."),
)
BRONZE_ENVELOPE = (
    col("event_date", DATE, "UTC date of the record's own time (partition).", True),
    col("platform", STRING, "Normalized platform: web, ios, android, email, pos, unknown, other.", True),
    col("platform_raw", STRING, "Platform as sent, kept when it normalized to 'other'."),
    col("source", STRING, "Producer name.", True),
    col("region", STRING, "Producer region."),
    col("schema_version", INT64, "Contract version the producer used.", True),
    col("emitted_at", TIMESTAMP, "Producer clock when the record was sent."),
    col("extra_json", STRING, "Fields beyond the contract (newer schema versions), as JSON."),
) + _INGEST
_RESOLVED = (
    col("session_id", STRING, "Session the record belongs to."),
    col("user_id", STRING, "User resolved through the session; null if anonymous or unknown."),
    col("platform", STRING, "Platform of the record's session; the record's own if the session is unknown.", True),
    # kept so a later merge can resolve again (the platform of a session without a record is its earliest child's own)
    col("record_platform", STRING, "The record's own platform as sent (normalized).", True),
)

BRONZE_PARTITION = ("event_date", "platform")
# On the tables with keyed hashes: the key that computed them (transforms.rules.pii), for rotation.
_PII_KEY_VERSION = col(
    "pii_key_version",
    STRING,
    "Version of the PII key that computed this row's *_hash "
    "columns (a Secret Manager version, env:<fingerprint> or dev).",
)


def _arrivals(time_column: str) -> tuple:
    """The checks of a table people's apps fill all day: each app platform's
    freshness, daily volume and share against its seasonal baseline."""
    return (Freshness(time_column=time_column, platforms=_APPS), Volume(platforms=_APPS), Mix(column="platform"))


def _bronze(name: str, description: str, columns: tuple, key: str, checks: tuple = ()) -> Table:
    # Bronze keeps every received copy: its keys are not unique, and a record without one is dead-lettered.
    return Table(
        name,
        Layer.BRONZE,
        description,
        columns + BRONZE_ENVELOPE,
        partition_by=BRONZE_PARTITION,
        cluster_by=("platform",),
        key=(key,),
        checks=(
            *key_checks((key,), unique=False),
            AcceptedValues(column="platform", values=tuple(str(p) for p in Platform)),
            SchemaDrift(),
            *checks,
        ),
    )


BRONZE_USERS = _bronze(
    "bronze_users",
    "One row per received valid user record.",
    (
        col("user_id", STRING, "User key.", True),
        col("email_hash", STRING, "HMAC-SHA256 of the trimmed, lower-cased email."),
        col("email_sha256", STRING, "Unkeyed SHA-256 of the normalized email (ad-platform matching)."),
        col("phone_number_hash", STRING, "HMAC-SHA256 of the E.164 phone number."),
        col("country", STRING, "ISO 3166 alpha-2, upper-cased."),
        col("is_active", BOOL, "Account is active."),
        col("signup_date", DATE, "Signup date."),
        col("updated_at", TIMESTAMP, "Producer's version time of the profile."),
        _PII_KEY_VERSION,
    ),
    "user_id",
)
BRONZE_SESSIONS = _bronze(
    "bronze_sessions",
    "One row per received valid session record (versions included).",
    (
        col("session_id", STRING, "Session key.", True),
        col("user_id", STRING, "User; null for anonymous sessions."),
        col("session_start_time", TIMESTAMP, "Session start.", True),
        col("session_end_time", TIMESTAMP, "Session end (often in a later version)."),
        col("device_type", STRING, "Device type."),
        col("geo_location", STRING, "Country or 'lat,lon'."),
        col("experiments_json", STRING, "A/B assignments, JSON object experiment -> variant."),
    ),
    "session_id",
    _arrivals("session_start_time"),
)
_SESSION_ID = col("session_id", STRING, "Session.", True)
_VIEW_COLUMNS = (
    col("view_timestamp", TIMESTAMP, "View time.", True),
    col("page_type", STRING, "Page type."),
    col("landing_page", STRING, "Landing page path."),
    col("is_referral", BOOL, "Arrived through a referral."),
)
_VIEW_ID = col("view_id", STRING, "View key.", True)
BRONZE_VIEWS = _bronze(
    "bronze_views",
    "One row per received valid page view.",
    (_VIEW_ID, _SESSION_ID) + _VIEW_COLUMNS,
    "view_id",
    (*_arrivals("view_timestamp"), Mix(column="page_type")),
)
_CLICK_COLUMNS = (
    col("click_timestamp", TIMESTAMP, "Click time.", True),
    col("element_clicked", STRING, "Element clicked."),
    col("page", STRING, "Page path."),
)
_CLICK_ID = col("click_id", STRING, "Click key.", True)
BRONZE_CLICKS = _bronze(
    "bronze_clicks", "One row per received valid click.", (_CLICK_ID, _SESSION_ID) + _CLICK_COLUMNS, "click_id"
)
_EVENT_COLUMNS = (
    col("event_id", STRING, "Event key.", True),
    col(
        "event_type",
        STRING,
        "Normalized lower snake case event type (funnel: browse, add_to_cart, payment_successful).",
        True,
    ),
    col("event_type_raw", STRING, "Event type as sent."),
    col("timestamp", TIMESTAMP, "Event time.", True),
    col("metadata_json", STRING, "Event metadata as JSON."),
    col("article_id", STRING, "metadata.article_id."),
    col("price", FLOAT64, "metadata.price."),
    col("currency", STRING, "metadata.currency."),
    col("order_id", STRING, "metadata.order_id."),
)
BRONZE_EVENTS = _bronze(
    "bronze_events",
    "One row per received valid event.",
    _EVENT_COLUMNS[:1] + (_SESSION_ID,) + _EVENT_COLUMNS[1:],
    "event_id",
    (*_arrivals("timestamp"), Mix(column="event_type")),
)
_RESPONSE_COLUMNS = (
    col("response_id", STRING, "Response key.", True),
    col("event_id", STRING, "Event the response answers.", True),
    col("response_type", STRING, "email_confirmation or sms_confirmation.", True),
    col("sent_email_hash", STRING, "HMAC-SHA256 of the normalized recipient email."),
    col("sent_phone_number_hash", STRING, "HMAC-SHA256 of the E.164 recipient phone."),
    col("status", STRING, "queued, sent, delivered, failed or bounced.", True),
    col("sent_at", TIMESTAMP, "Send time; emitted_at when the producer sent none."),
    _PII_KEY_VERSION,
)
BRONZE_EVENT_RESPONSES = _bronze(
    "bronze_event_responses",
    "One row per received valid event response (status versions included).",
    _RESPONSE_COLUMNS,
    "response_id",
    (
        AcceptedValues(column="response_type", values=tuple(str(t) for t in ResponseType)),
        AcceptedValues(column="status", values=tuple(str(s) for s in ResponseStatus)),
    ),
)
_ACTIVITY_COLUMNS = (
    col("activity_id", STRING, "Activity key.", True),
    col("response_id", STRING, "Response (ticket confirmation) the activity used.", True),
    col("activity_type", STRING, "barcode_scanned, ...", True),
    col("activity_time", TIMESTAMP, "Activity time.", True),
    col("location", STRING, "Where it happened, e.g. a gate."),
)
BRONZE_USER_ACTIVITY = _bronze(
    "bronze_user_activity",
    "One row per received valid user activity.",
    _ACTIVITY_COLUMNS,
    "activity_id",
    (AcceptedValues(column="activity_type", values=tuple(str(t) for t in ActivityType)),),
)

BRONZE = {
    t.name: t
    for t in (
        BRONZE_USERS,
        BRONZE_SESSIONS,
        BRONZE_VIEWS,
        BRONZE_CLICKS,
        BRONZE_EVENTS,
        BRONZE_EVENT_RESPONSES,
        BRONZE_USER_ACTIVITY,
    )
}

# --- silver --------------------------------------------------------------------------
_SILVER_COMMON = (
    col("source", STRING, "Producer of the winning version."),
    col("emitted_at", TIMESTAMP, "Producer clock of the winning version."),
    col("copies", INT64, "How many valid copies/versions of this identity were received.", True),
    # Where the winning copy was received: what "first copy" and version ties
    # are decided by when a later merge brings another copy (transforms.rules.merge).
    col(
        "ingested_at",
        TIMESTAMP,
        "When the winning copy (newest version) was received; null for a session inferred without a record.",
    ),
    col("source_file", STRING, "Landing file of the winning copy; null for Pub/Sub."),
    col("source_line", INT64, "Line (or row) number in source_file."),
    col("message_id", STRING, "Pub/Sub message id of the winning copy; null for file ingest."),
)
_SILVER_DATE = col("event_date", DATE, "UTC date of the winning copy's own time, as in bronze (partition).", True)


def _silver(
    name: str, description: str, columns: tuple, key: str, partition: str = "event_date", checks: tuple = ()
) -> Table:
    # Partitioned by date: a merge rewrites the files of the days it touches, not all of silver.
    dated = columns if partition != "event_date" else columns + (_SILVER_DATE,)
    return Table(
        name,
        Layer.SILVER,
        description,
        dated + _SILVER_COMMON,
        partition_by=(partition,),
        key=(key,),
        checks=key_checks((key,)) + checks,
    )


# Children whose session record never arrived: the generator sends 2% of sessions without one (up to 4%
# of a day's views), a producer dropping them many more.
_SESSION_ARRIVED = Relationship(
    column="session_id",
    parent="silver_sessions",
    parent_column="session_id",
    parent_flag="has_session_record",
    tolerated_share=0.1,
)


SILVER_USERS = _silver(
    "silver_users",
    "One current row per user (newest updated_at, else emitted_at, wins).",
    (
        col("user_id", STRING, "User key.", True),
        col("platform", STRING, "Platform of the winning user record.", True),
        col("email_hash", STRING, "HMAC-SHA256 of the normalized email."),
        col("email_sha256", STRING, "Unkeyed SHA-256 of the normalized email."),
        col("phone_number_hash", STRING, "HMAC-SHA256 of the E.164 phone number."),
        col("country", STRING, "ISO 3166 alpha-2."),
        col("is_active", BOOL, "Account is active."),
        col("signup_date", DATE, "Signup date."),
        col("updated_at", TIMESTAMP, "Version time of the winning profile."),
        _PII_KEY_VERSION,
    ),
    "user_id",
)
SILVER_SESSIONS = _silver(
    "silver_sessions",
    "One current row per session: versions merged (newest non-null field wins), "
    "inferred from its views/clicks/events when the session record never arrived.",
    (
        col("session_id", STRING, "Session key.", True),
        col("user_id", STRING, "User; null for anonymous sessions or when the session record is missing."),
        col("platform", STRING, "Platform of the session record, else of its earliest view/click/event.", True),
        col("has_session_record", BOOL, "False when the session was inferred from its views/clicks/events.", True),
        col("session_date", DATE, "UTC date of session_start_time.", True),
        col("session_start_time", TIMESTAMP, "Start; for inferred sessions the earliest view/click/event.", True),
        col("session_end_time", TIMESTAMP, "End as reported by the producer."),
        col("device_type", STRING, "Device type."),
        col("geo_location", STRING, "Country or 'lat,lon'."),
        col("experiments_json", STRING, "A/B assignments, JSON object experiment -> variant."),
        col("first_activity_at", TIMESTAMP, "Earliest view/click/event."),
        col("last_activity_at", TIMESTAMP, "Latest view/click/event."),
        col("duration_seconds", FLOAT64, "session_end_time (else the last view/click/event) minus session_start_time."),
        col("views", INT64, "Unique views.", True),
        col("clicks", INT64, "Unique clicks.", True),
        col("events", INT64, "Unique events of any type.", True),
        col("browse_events", INT64, "Unique browse events.", True),
        col("add_to_cart_events", INT64, "Unique add_to_cart events.", True),
        col("payment_events", INT64, "Unique payment_successful events.", True),
        col(
            "furthest_stage_in_session",
            INT64,
            "Highest funnel stage (0-3) the session's own views and events reach; "
            "confirmation and scan arrive later and count in gold.",
            True,
        ),
        col(
            "merge_versions",
            STRING,
            "Merge bookkeeping, not for analysis: JSON list, newest first, of the older "
            "versions than the winning one that gave fields, each {version: [emitted_at, ingested_at, source_file, "
            "source_line, message_id], fields: [names]}, so a later merge of an older copy decides them exactly; null "
            "when every field is the newest version's.",
        ),
    ),
    "session_id",
    partition="session_date",
)
SILVER_VIEWS = _silver(
    "silver_views",
    "One row per view (first copy wins), joined to its session.",
    (_VIEW_ID,) + _RESOLVED + _VIEW_COLUMNS,
    "view_id",
    checks=(_SESSION_ARRIVED,),
)
SILVER_CLICKS = _silver(
    "silver_clicks",
    "One row per click (first copy wins), joined to its session.",
    (_CLICK_ID,) + _RESOLVED + _CLICK_COLUMNS,
    "click_id",
)
SILVER_EVENTS = _silver(
    "silver_events",
    "One row per event (first copy wins), joined to its session.",
    _EVENT_COLUMNS[:1] + _RESOLVED + _EVENT_COLUMNS[1:],
    "event_id",
    checks=(_SESSION_ARRIVED,),
)
SILVER_EVENT_RESPONSES = _silver(
    "silver_event_responses",
    "One current row per response (newest emitted_at wins), joined through its event to the session.",
    _RESPONSE_COLUMNS + _RESOLVED,
    "response_id",
    # a confirmation follows its payment within minutes
    checks=(Relationship(column="event_id", parent="silver_events", parent_column="event_id", tolerated_share=0.01),),
)
SILVER_USER_ACTIVITY = _silver(
    "silver_user_activity",
    "One row per activity (first copy wins), joined through response -> event -> session.",
    _ACTIVITY_COLUMNS + (col("event_id", STRING, "Event the response answers."),) + _RESOLVED,
    "activity_id",
    # a ticket is scanned at the venue, up to a few weeks after its confirmation
    checks=(
        Relationship(
            column="response_id",
            parent="silver_event_responses",
            parent_column="response_id",
            tolerated_share=0.01,
            within_days=21,
        ),
    ),
)

SILVER = {
    t.name: t
    for t in (
        SILVER_USERS,
        SILVER_SESSIONS,
        SILVER_VIEWS,
        SILVER_CLICKS,
        SILVER_EVENTS,
        SILVER_EVENT_RESPONSES,
        SILVER_USER_ACTIVITY,
    )
}

# --- gold ------------------------------------------------------------------------------
FACT_FUNNEL_STAGE = Table(
    "fact_funnel_stage",
    Layer.GOLD,
    "One row per (session, reached funnel stage).",
    (
        col("session_id", STRING, "Session (one funnel journey).", True),
        col("user_id", STRING, "User; null for anonymous sessions."),
        col("session_date", DATE, "UTC date of the session start.", True),
        col("platform", STRING, "Session platform.", True),
        col("device_type", STRING, "Session device type."),
        col(
            "country",
            STRING,
            "User's country; for anonymous sessions the session's geo_location when it is a country code.",
        ),
        col("stage_number", INT64, "1 browse .. 5 barcode_scanned.", True),
        col(
            "stage_name", STRING, "browse, add_to_cart, payment_successful, email_confirmation, barcode_scanned.", True
        ),
        col("reached_at", TIMESTAMP, "When the stage was reached.", True),
        col("seconds_from_previous_stage", FLOAT64, "Seconds since the previous stage; null for stage 1."),
    ),
    partition_by=(),
    cluster_by=("platform",),
    bigquery_partition="session_date",
    checks=(
        *key_checks(("session_id", "stage_number")),
        AcceptedValues(Severity.BLOCK, column="stage_name", values=tuple(str(s) for s in Stage)),
        RowCountChange(),
    ),
)
FACT_USER_ACTIVITY = Table(
    "fact_user_activity",
    Layer.GOLD,
    "One row per (user, UTC date) with any activity.",
    (
        col("user_id", STRING, "User.", True),
        col("activity_date", DATE, "UTC date of each record's own time.", True),
        col("sessions", INT64, "Sessions started.", True),
        col("views", INT64, "Views.", True),
        col("clicks", INT64, "Clicks.", True),
        col("browse_events", INT64, "browse events.", True),
        col("add_to_cart_events", INT64, "add_to_cart events.", True),
        col("payments", INT64, "payment_successful events.", True),
        col(
            "confirmations_sent", INT64, "Email confirmations currently sent or delivered, on their sent_at date.", True
        ),
        col("barcode_scans", INT64, "barcode_scanned activities.", True),
    ),
    cluster_by=("user_id",),
    bigquery_partition="activity_date",
    checks=key_checks(("user_id", "activity_date")),
)
DIM_USER = Table(
    "dim_user",
    Layer.GOLD,
    "One row per user seen in a user record or a session.",
    (
        col("user_id", STRING, "User.", True),
        col("email_hash", STRING, "HMAC-SHA256 of the normalized email."),
        col("country", STRING, "ISO 3166 alpha-2."),
        col("is_active", BOOL, "Account is active."),
        col("signup_date", DATE, "Signup date."),
        col("first_seen_at", TIMESTAMP, "Earliest record time in the user's sessions."),
        col("last_seen_at", TIMESTAMP, "Latest record time in the user's sessions."),
        col("first_platform", STRING, "Platform of the user's earliest session."),
        col("lifetime_sessions", INT64, "Sessions.", True),
        col("lifetime_payments", INT64, "Distinct payment_successful events in the user's sessions.", True),
        col("furthest_stage_number", INT64, "Highest funnel stage in any session; 0 if none.", True),
    ),
    checks=(*key_checks(("user_id",)), RowCountChange()),
)
_PERIOD = (
    col("period_grain", STRING, "day, month or year.", True),
    col("period_start", DATE, "First day of the period (UTC).", True),
    col("platform", STRING, "Platform, or 'all'.", True),
)
_RATE = "null when the denominator is 0."
_PERIOD_KEY = key_checks(("period_grain", "period_start", "platform")) + (
    AcceptedValues(Severity.BLOCK, column="period_grain", values=("day", "month", "year")),
)
_STAGE_SESSIONS = tuple(col(stage.sessions_column, INT64, f"Sessions reaching {stage}.", True) for stage in Stage)
# Sessions reaching each funnel stage, in stage order (mart_conversion_rate, mart_ab_test).
STAGE_SESSION_COLUMNS = tuple(c.name for c in _STAGE_SESSIONS)
# The contract's rates of mart_conversion_rate: rate -> (numerator, denominator), both stage-session columns.
CONVERSION_RATES = {
    "conversion_rate": ("sessions_payment", "sessions_browse"),
    "cart_rate": ("sessions_add_to_cart", "sessions_browse"),
    "checkout_rate": ("sessions_payment", "sessions_add_to_cart"),
    "confirmation_rate": ("sessions_email_confirmation", "sessions_payment"),
    "scan_rate": ("sessions_barcode_scanned", "sessions_email_confirmation"),
}
MART_CONVERSION_RATE = Table(
    "mart_conversion_rate",
    Layer.GOLD,
    "Funnel conversion per period and platform (periods from session_date).",
    _PERIOD
    + (
        *_STAGE_SESSIONS,
        col("users_browse", INT64, "Distinct users with a session reaching browse.", True),
        col("users_payment", INT64, "Distinct users with a session reaching payment_successful.", True),
        *(col(rate, FLOAT64, f"{num} / {den}; " + _RATE) for rate, (num, den) in CONVERSION_RATES.items()),
    ),
    cluster_by=("period_grain", "platform"),
    # The funnel's own sanity: a session confirmed paid, a scanned ticket was confirmed.
    checks=_PERIOD_KEY
    + (
        Sanity(
            Severity.BLOCK,
            name="confirmations_at_most_payments",
            at_most="sessions_email_confirmation",
            of="sessions_payment",
            per_row=True,
        ),
        Sanity(
            Severity.BLOCK,
            name="scans_at_most_confirmations",
            at_most="sessions_barcode_scanned",
            of="sessions_email_confirmation",
            per_row=True,
        ),
    ),
)
MART_BARCODE_ACTIVITY = Table(
    "mart_barcode_activity",
    Layer.GOLD,
    "Barcode scans per period and platform (periods from activity_time).",
    _PERIOD
    + (
        col("barcode_scans", INT64, "Unique barcode_scanned activities.", True),
        col("scanning_users", INT64, "Distinct users with a scan.", True),
        col("scanned_orders", INT64, "Distinct payment events with a scan.", True),
        col(
            "median_seconds_payment_to_scan",
            FLOAT64,
            "Median of scan activity_time minus the confirmed payment's timestamp; null when no scan "
            "links to a payment.",
        ),
    ),
    cluster_by=("period_grain", "platform"),
    checks=_PERIOD_KEY
    + (
        Sanity(
            Severity.BLOCK,
            name="scanned_orders_at_most_scans",
            at_most="scanned_orders",
            of="barcode_scans",
            per_row=True,
        ),
    ),
)

MART_RETARGETING = Table(
    "mart_retargeting",
    Layer.GOLD,
    "Active users whose latest add_to_cart has no payment by them within 24 hours after it (and at "
    "least 24 hours have passed).",
    (
        col("user_id", STRING, "User.", True),
        col("email_hash", STRING, "HMAC-SHA256 of the normalized email (joins to dim_user)."),
        col(
            "email_sha256", STRING, "Unkeyed SHA-256 hex of the trimmed, lower-cased email: what ad platforms match on."
        ),
        col("last_cart_at", TIMESTAMP, "Time of the user's latest add_to_cart event.", True),
        col(
            "carted_articles",
            STRING,
            "Distinct metadata.article_id of the add_to_cart events in that cart's session, sorted.",
            repeated=True,
        ),
        col("cart_value", FLOAT64, "Sum over those articles of the highest metadata.price carted; null when no price."),
        col("platform", STRING, "Platform of that cart's session."),
    ),
    cluster_by=("platform",),
    checks=key_checks(("user_id",)),
)
MART_AB_TEST = Table(
    "mart_ab_test",
    Layer.GOLD,
    "Experiment readout per (experiment, variant): the unit is a session with the assignment, the "
    "metric is reaching payment_successful.",
    (
        col("experiment", STRING, "Experiment name (key of the session's experiments).", True),
        col("variant", STRING, "Variant the session was assigned.", True),
        col("is_control", BOOL, "This row is the experiment's control: the variant named 'control', else 'A'.", True),
        col("sessions", INT64, "Sessions assigned to the variant.", True),
        *_STAGE_SESSIONS,
        col("conversion_rate", FLOAT64, "sessions_payment / sessions; " + _RATE),
        col(
            "lift_vs_control",
            FLOAT64,
            "conversion_rate / the control's - 1; null for the control, without a control or when "
            "the control's rate is 0.",
        ),
        col("diff_vs_control", FLOAT64, "conversion_rate minus the control's; null for the control or without one."),
        col("ci_low", FLOAT64, "95% confidence interval of diff_vs_control (Wald, unpooled), lower bound."),
        col("ci_high", FLOAT64, "Upper bound of that interval."),
        col("p_value", FLOAT64, "Two-sided two-proportion z-test (pooled) of conversion_rate against the control's."),
        col(
            "srm_p_value",
            FLOAT64,
            "Chi-square test of the experiment's session split against an even split (same on every "
            "row of an experiment).",
        ),
        col("srm_flag", BOOL, "Sample-ratio mismatch: srm_p_value below 0.001."),
    ),
    checks=key_checks(("experiment", "variant")),
)
OPS_ALERTS = Table(
    "ops_alerts",
    Layer.GOLD,
    "One row per operational alert, rebuilt from silver by every gold recompute.",
    (
        col(
            "alert_id",
            STRING,
            "Stable id: the same condition always gets the same id (SHA-256 of type and subject).",
            True,
        ),
        col(
            "alert_type",
            STRING,
            "email_failed, email_failure_rate, confirmation_missing; data_quality (ops only).",
            True,
        ),
        col(
            "detected_at",
            TIMESTAMP,
            "Event time the condition became true: the failed response's time, the 15-minute "
            "window's end, the payment's time plus 30 minutes.",
            True,
        ),
        col("event_id", STRING, "The payment event (email_failed, confirmation_missing)."),
        col("response_id", STRING, "The failed response (email_failed)."),
        col("details", STRING, "JSON: what the alert is about (status, counts, rate, deadline)."),
    ),
    cluster_by=("alert_type",),
    checks=key_checks(("alert_id",)),
)

# --- funnels people define (schemas.funnels) -------------------------------------------------------
# Bucket lower bounds (seconds) of mart_funnel.time_to_convert_histogram: under a minute (the first
# bucket takes anything below 60 s), 1-5 min, 5-15 min, 15 min-1 h, 1-6 h, 6-24 h, 1-3 d, 3-7 d, 7 d and more.
TIME_TO_CONVERT_EDGES_SECONDS = (0, 60, 300, 900, 3600, 21600, 86400, 259200, 604800)
_FIRST_TOUCH = (
    col("platform", STRING, "Platform of the entry's session."),
    col("device_type", STRING, "Device type of the entry's session."),
    col("country", STRING, "Country of the entry's session, as in fact_funnel_stage."),
    col("landing_page", STRING, "Landing page of the entry session's earliest view."),
    col("referral", STRING, "'referral' or 'direct': how the entry session's earliest view arrived."),
    col("experiments_json", STRING, "A/B assignments of the entry's session, JSON object experiment -> variant."),
)
FACT_FUNNEL = Table(
    "fact_funnel",
    Layer.GOLD,
    "One row per (defined funnel, unit entry): the steps it reached, when, and its first-touch values "
    "(the funnels of schemas/funnels.yaml).",
    (
        col("funnel", STRING, "Funnel name (schemas/funnels.yaml).", True),
        col("unit", STRING, "session or user: what goes through the funnel.", True),
        col("unit_id", STRING, "The session_id or user_id.", True),
        col("entry_number", INT64, "1 for the unit's first entry, 2 after its first window closed, ...", True),
        col("user_id", STRING, "User; null for an anonymous session."),
        col("session_id", STRING, "Session of the entry record (first touch).", True),
        col("entry_at", TIMESTAMP, "When the unit entered: its first step's record (any step, in any order).", True),
        col("entry_date", DATE, "UTC date of entry_at: the entry cohort.", True),
        col("window_ends_at", TIMESTAMP, "entry_at plus the funnel's window; null without one."),
        col(
            "steps_reached",
            INT64,
            "Steps reached, 1 .. the funnel's steps (they are always the first ones; any order: distinct steps).",
            True,
        ),
        col("completed", BOOL, "Whether every step was reached.", True),
        col(
            "reached_at",
            TIMESTAMP,
            "When each reached step was reached: element k is step k+1 (any order: the (k+1)-th distinct step).",
            repeated=True,
        ),
        col("seconds_to_step", FLOAT64, "Seconds from entry to each reached step (as reached_at).", repeated=True),
        col(
            "seconds_from_previous",
            FLOAT64,
            "Seconds from the step before to each reached step (as reached_at; the entry's is 0, and a step "
            "with after_previous: false that came before the step before it has a negative one).",
            repeated=True,
        ),
        *_FIRST_TOUCH,
    ),
    cluster_by=("funnel",),
    bigquery_partition="entry_date",
    checks=key_checks(("funnel", "unit_id", "entry_number")),
)
MART_FUNNEL = Table(
    "mart_funnel",
    Layer.GOLD,
    "Defined funnels per entry cohort (day, week from Monday, month), breakdown value and step.",
    (
        col("funnel", STRING, "Funnel name.", True),
        col("cohort_grain", STRING, "day, week or month.", True),
        col("cohort_start", DATE, "First day of the entry cohort (UTC).", True),
        col("breakdown", STRING, "The property broken down by ('all': every entry).", True),
        col(
            "breakdown_value",
            STRING,
            "Its first-touch value: one of the breakdown_limit most frequent, 'other' for the rest, "
            "'(none)' without one; 'all' for breakdown 'all'.",
            True,
        ),
        col("step_number", INT64, "The step.", True),
        col("step_name", STRING, "The step's name.", True),
        col("entered", INT64, "Entries of the cohort.", True),
        col("converted", INT64, "Entries that reached the step.", True),
        col("conversion_rate", FLOAT64, "converted / entered.", True),
        col("pending", INT64, "Entries that have not reached it and whose window is still open.", True),
        col("dropped", INT64, "Entries that have not reached it and whose window has closed (no window: all).", True),
        col("median_seconds_to_convert", FLOAT64, "Median seconds from entry to the step; null when none converted."),
        col("p90_seconds_to_convert", FLOAT64, "90th percentile (interpolated) of those seconds."),
        col(
            "time_to_convert_histogram",
            INT64,
            "Converted entries per bucket of seconds from entry: <1m, 1-5m, 5-15m, 15m-1h, 1-6h, "
            "6-24h, 1-3d, 3-7d, 7d+.",
            repeated=True,
        ),
        col(
            "median_seconds_from_previous",
            FLOAT64,
            "Median seconds from the step before to the step (fact_funnel.seconds_from_previous); null when none "
            "converted.",
        ),
        col("p90_seconds_from_previous", FLOAT64, "90th percentile (interpolated) of those seconds."),
        col(
            "time_from_previous_histogram",
            INT64,
            "Converted entries per bucket of seconds from the step before, as time_to_convert_histogram (a "
            "negative time is in the first bucket).",
            repeated=True,
        ),
    ),
    cluster_by=("funnel", "cohort_grain"),
    checks=key_checks(("funnel", "cohort_grain", "cohort_start", "breakdown", "breakdown_value", "step_number"))
    + (
        AcceptedValues(Severity.BLOCK, column="cohort_grain", values=("day", "week", "month")),
        Sanity(Severity.BLOCK, name="converted_at_most_entered", at_most="converted", of="entered", per_row=True),
    ),
)

# The alerts as the streaming job raises them: lake ops_alerts/, BigQuery ops.ops_alerts (appended;
# each alert once while its state lives). The batch rebuild is gold.ops_alerts.
OPS_ALERTS_STREAM = replace(
    OPS_ALERTS,
    layer=Layer.OPS,
    key=("alert_id",),
    description="One row per operational alert, raised by the "
    "streaming job as records arrive (the rules of gold.ops_alerts).",
)


GOLD = {
    t.name: t
    for t in (
        FACT_FUNNEL_STAGE,
        FACT_USER_ACTIVITY,
        DIM_USER,
        MART_CONVERSION_RATE,
        MART_BARCODE_ACTIVITY,
        MART_RETARGETING,
        MART_AB_TEST,
        OPS_ALERTS,
        FACT_FUNNEL,
        MART_FUNNEL,
    )
}
# The columns identifying a gold row, from its unique check (gold is rebuilt
# whole, so these are for readers: Looker's primary keys, dbt's unique tests).
GOLD_ROW_KEYS = {name: table.row_key for name, table in GOLD.items()}

# --- dead letter ---------------------------------------------------------------------
DEAD_LETTER = Table(
    "dead_letter",
    Layer.OPS,
    "Rejected records with a typed reason. Holds a pointer to the raw "
    "record, never its content (which may carry personal data).",
    (
        col("ingest_date", DATE, "UTC date of ingest (partition).", True),
        col("ingested_at", TIMESTAMP, "When the record was received.", True),
        col("pipeline", STRING, "Pipeline that rejected it: backfill or stream_ingest.", True),
        col("reason", STRING, "Typed reason, see schemas.contract.REASONS.", True),
        col("field", STRING, "Offending field, when one is to blame."),
        col("error_message", STRING, "Human-readable message; never contains field values.", True),
        col("record_type", STRING, "record_type when it could be read."),
        col("payload_bytes", INT64, "Size of the rejected record.", True),
        col("source_file", STRING, "Landing file (look the record up in raw/)."),
        col("source_line", INT64, "Line number in source_file."),
        col("message_id", STRING, "Pub/Sub message id (look the record up in raw/)."),
    ),
    partition_by=("ingest_date",),
    checks=(DeadLetterShare(),),
)

# --- sink failures: rows a sink rejected ---------------------------------------------------
SINK_DEAD_LETTER = Table(
    "sink_dead_letter",
    Layer.OPS,
    "Rows a sink (BigQuery, the alerts topic) rejected, or kept "
    "failing past the retry deadline, with the error; the stream goes on "
    "(transforms.sinks.dead_letter). The lake copy is authoritative.",
    (
        col("failed_date", DATE, "UTC date of the failure (partition).", True),
        col("dead_letter_id", STRING, "Stable id of the row's failure: SHA-256 of run, target, batch and row.", True),
        col("failed_at", TIMESTAMP, "When the write was given up.", True),
        col("pipeline", STRING, "Pipeline whose sink failed.", True),
        col("run_id", STRING, "The launch that wrote the batch.", True),
        col("target", STRING, "Where the rows were going: project.dataset.table, or pubsub:projects/P/topics/T.", True),
        col(
            "error_type",
            STRING,
            "Exception class, e.g. BadRequest; RetryError when transient errors outlasted the retry deadline.",
            True,
        ),
        col("error_message", STRING, "The error as the client reported it.", True),
        col(
            "row_json", STRING, "The rejected row, as JSON of the target's columns (hashes, never plaintext PII).", True
        ),
    ),
    partition_by=("failed_date",),
    key=("dead_letter_id",),
)

# --- data quality: one row per check, subject and run --------------------------------------
DQ_RESULTS = Table(
    "dq_results",
    Layer.OPS,
    "One row per data-quality check, subject and run (schemas.quality): what was observed, the band it had "
    "to lie in, and the verdict.",
    (
        col("run_date", DATE, "UTC date of the evaluation (partition).", True),
        col("result_id", STRING, "Stable id: SHA-256 of run, check and subject.", True),
        col("run_id", STRING, "The run that evaluated it.", True),
        col("pipeline", STRING, "backfill, gold_daily or stream_ingest.", True),
        col("evaluated_at", TIMESTAMP, "When it was evaluated.", True),
        col("check_id", STRING, "<table>.<kind>[.<what>], as declared.", True),
        col("check_kind", STRING, "not_null, unique, volume, freshness, ... (schemas.quality.CheckKind).", True),
        col("table_name", STRING, "The table checked.", True),
        col("severity", STRING, "warn or block.", True),
        col("subject", STRING, "What inside the table: all, a day, a platform, a landing file, a reason.", True),
        col("event_date", DATE, "The day checked, for checks of a day."),
        col("platform", STRING, "The platform checked, for checks per platform."),
        col("observed", FLOAT64, "The observed value (a count, a share, a lag in hours, a distance)."),
        col("expected_low", FLOAT64, "Lowest value that passes; null: no lower bound."),
        col("expected_high", FLOAT64, "Highest value that passes; null: no upper bound."),
        col("verdict", STRING, "pass, fail, or no_baseline (too little history to judge).", True),
        col("details", STRING, "JSON: the baseline, offending values, counts."),
    ),
    partition_by=("run_date",),
    key=("result_id",),
)

DQ_COMPLETENESS = Table(
    "dq_completeness",
    Layer.OPS,
    "Per event day and evaluation, the estimated share of the day's records received so far, from the lake's "
    "lateness profile (schemas.quality.Completeness).",
    (
        col("as_of_date", DATE, "UTC date of as_of (partition).", True),
        col("as_of", TIMESTAMP, "The lake's clock when estimated: its newest ingest time.", True),
        col("run_id", STRING, "The run that estimated it.", True),
        col("event_date", DATE, "The day estimated.", True),
        col("received", INT64, "Bronze records of the day received by as_of.", True),
        col(
            "expected_share",
            FLOAT64,
            "Share of a day's records received by the same time after its start, over the profile's days; "
            "null: too few complete days to tell.",
        ),
        col("estimated_total", FLOAT64, "received / expected_share: the records the day will have."),
        col("profile_days", INT64, "Complete days the profile was drawn from.", True),
        col("profile_records", INT64, "Records of those days.", True),
    ),
    partition_by=("as_of_date",),
    key=("run_id", "event_date"),
)

METRIC_REVISIONS = Table(
    "metric_revisions",
    Layer.OPS,
    "Gold's headline metrics per day (period_grain day, platform all) that a gold release changed against the "
    "release before it (both readable by Delta time travel, ops releases).",
    (
        col("released_date", DATE, "UTC date of the release (partition).", True),
        col("released_at", TIMESTAMP, "When the revising release was made.", True),
        col("release_run_id", STRING, "The gold run that released the new values.", True),
        col("previous_run_id", STRING, "The gold run whose release it revised.", True),
        col("period_start", DATE, "The day revised.", True),
        col("metric", STRING, "conversion_rate, sessions_browse, sessions_payment or barcode_scans.", True),
        col("previous_value", FLOAT64, "In the previous release; null: the day was not there."),
        col("value", FLOAT64, "In this release; null: the day is gone."),
        col(
            "late_records",
            INT64,
            "Bronze records of the day (event_date) added between the two releases (net of rows removed, at least 0).",
            True,
        ),
    ),
    partition_by=("released_date",),
    key=("release_run_id", "period_start", "metric"),
)

# --- run log: every run's counters and its accounting check ---------------------------------
RUN_LOG = Table(
    "run_log",
    Layer.OPS,
    "One row per run and counter: what each run read, wrote, rejected and "
    "deduplicated, and whether its accounting balanced (pipelines.common.accounting).",
    (
        col("run_date", DATE, "UTC date the run finished (partition).", True),
        col("run_log_id", STRING, "Stable id: SHA-256 of run and counter.", True),
        col("run_id", STRING, "The run.", True),
        col("pipeline", STRING, "backfill, gold_daily, replay_dead_letter, ...", True),
        col("finished_at", TIMESTAMP, "When the run finished.", True),
        col("counter", STRING, "Counter name (namespace funnel).", True),
        col("value", INT64, "Its value at the end of the run.", True),
        col("balanced", BOOL, "Whether the run's accounting check held (same on every row of a run).", True),
    ),
    partition_by=("run_date",),
    key=("run_log_id",),
)

# --- erasure audit: one row per erasure, without the person's identifiers ----------------
ERASURE_LOG = Table(
    "erasure_log",
    Layer.OPS,
    "One row per erasure of a person (pipelines.erase_user): who asked, "
    "when, what was removed. Holds a keyed hash of the subject, never the identifier.",
    (
        col("erased_date", DATE, "UTC date of the erasure (partition).", True),
        col("erasure_id", STRING, "Id of the erasure run.", True),
        col("erased_at", TIMESTAMP, "When the erasure finished.", True),
        col("requested_by", STRING, "Who asked (--requested-by, else the operating user).", True),
        col("subject_kind", STRING, "user_id or email: how the person was named.", True),
        col(
            "subject_hash",
            STRING,
            "HMAC-SHA256 of the identifier with the PII key (proves which request, reveals nothing).",
            True,
        ),
        col("pii_key_version", STRING, "The key of subject_hash.", True),
        col("user_count", INT64, "User ids the identifier resolved to.", True),
        col("rows_deleted_json", STRING, "JSON object: table -> rows deleted (lake; BigQuery as bq:<table>).", True),
        col("raw_objects_json", STRING, "JSON list: raw-layer data files holding the person's records.", True),
        col("raw_deleted", BOOL, "Whether those raw rows were deleted (--include-raw).", True),
        col("gold_recomputed_as_of", DATE, "The as-of day gold was recomputed for."),
    ),
    partition_by=("erased_date",),
    key=("erasure_id",),
)

# --- releases: which versions of a layer's tables go together ---------------------------
RELEASES = Table(
    "releases",
    Layer.OPS,
    "Lake only: one row per table of each committed silver or gold release; a "
    "reader takes a layer's tables at the versions of its latest release, so it never sees a mix "
    "of two runs (transforms.lake.tables).",
    (
        col("layer", STRING, "silver or gold.", True),
        col("table_name", STRING, "A table of that layer.", True),
        col("version", INT64, "The table's Delta version this release consists of.", True),
        col("run_id", STRING, "The run that committed it.", True),
        col("released_at", TIMESTAMP, "When the release was committed.", True),
    ),
)

FUNNEL_DEFINITIONS = Table(
    "funnel_definitions",
    Layer.OPS,
    "Lake only: the funnel definitions each gold run computed, as written (schemas/funnels.py); those "
    "of the run the latest gold release names are in force, and gold without --funnels uses them "
    "(transforms.lake.funnel_definitions).",
    (
        col("run_id", STRING, "The gold run that computed them.", True),
        col("recorded_at", TIMESTAMP, "When that run started.", True),
        col("source", STRING, "Where they were read: the --funnels path, the lake, or the packaged default.", True),
        col("definitions_yaml", STRING, "The definitions, as YAML.", True),
        col("funnel_names", STRING, "The funnels' names, comma-separated.", True),
    ),
)

# --- silver head: which bronze versions silver holds, and the merge in progress -----------
SILVER_HEAD = Table(
    "silver_head",
    Layer.OPS,
    "Lake only: one row, rewritten by every merge into silver: the bronze "
    "versions silver holds once the merge named here is released, and who merges "
    "(transforms.lake.silver). Merges take turns through it.",
    (
        col("claim_id", STRING, "The merge: its commits to silver carry this id.", True),
        col("pipeline", STRING, "Pipeline that claimed it.", True),
        col("claimed_at", TIMESTAMP, "When it was claimed (a claim older than the lease is taken over).", True),
        col(
            "rebuild",
            BOOL,
            "True: silver is recomputed from all of bronze as of from_versions_json, then merged "
            "up to to_versions_json.",
            True,
        ),
        col("from_versions_json", STRING, "JSON: bronze table -> version silver held before (null: none).", True),
        col("to_versions_json", STRING, "JSON: bronze table -> version silver holds after.", True),
    ),
)

COMMIT_LOCK = Table(
    "commit_lock",
    Layer.OPS,
    "Lake only: one row, rewritten by every writer taking or giving back the lake's commit lock "
    "(transforms.lake.lock): one writer commits at a time.",
    (
        col("holder", STRING, "The run holding the lock (null: free).", False),
        col("pipeline", STRING, "The command holding it (backfill, gold_daily, stream_ingest ...).", False),
        col("host", STRING, "The machine the holder runs on.", False),
        col("pid", INT64, "The holder's process id on that machine.", False),
        col("since", TIMESTAMP, "When the holder took the lock.", False),
        col("expires", TIMESTAMP, "When its lease runs out unless renewed (a holder that died is passed then).", False),
    ),
)

ALL_TABLES = {**BRONZE, **SILVER, **GOLD, RAW.name: RAW, DEAD_LETTER.name: DEAD_LETTER}

# The BigQuery datasets, one per layer, and what each holds (Terraform and dbt read these).
DATASETS = {
    Layer.BRONZE: "Typed, normalized, PII-hashed rows per record type.",
    Layer.SILVER: "One current row per identity, joined; merged by the streaming job and the backfill alike.",
    Layer.GOLD: "Funnel facts, dimensions and marts (truncate and load).",
    Layer.OPS: "Dead letter, operational alerts, sink failures, run log, erasure log, data-quality results, "
    "completeness and revisions, and the short-lived scratch tables MERGEs read from.",
}

# Every table with a BigQuery copy (``--sink bigquery``): all lake tables but
# raw (BigLake reads it in place) and the lake's own release log.
BIGQUERY_TABLES = (
    *BRONZE.values(),
    DEAD_LETTER,
    *SILVER.values(),
    *GOLD.values(),
    OPS_ALERTS_STREAM,
    SINK_DEAD_LETTER,
    RUN_LOG,
    ERASURE_LOG,
    DQ_RESULTS,
    DQ_COMPLETENESS,
    METRIC_REVISIONS,
)
