-- Reference medallion in SQL (see reference.py), from TABLES_AND_METRICS.md.
-- Input: typed_<record type> tables (valid records, typed, timestamps in
-- epoch micros). Placeholders: {AS_OF_END} (end of the as-of day, micros),
-- {CLOCK} (the earlier of that and now: for rules that wait for a deadline),
-- {NEVER} (version of a record that has none). Comment lines are dropped,
-- then the script is split into statements at semicolons.

CREATE MACRO utc_date(us) AS CAST(make_timestamp(us) AS DATE);
CREATE MACRO strip_ws(v) AS regexp_replace(v, '^\s+|\s+$', '', 'g');
CREATE MACRO rate(n, d) AS CASE WHEN d = 0 THEN NULL ELSE n::DOUBLE / d END;
CREATE MACRO norm_platform(v) AS CASE
    WHEN v IS NULL OR strip_ws(v) = '' THEN 'unknown'
    WHEN lower(strip_ws(v)) IN ('web', 'desktop', 'mobile-web', 'browser') THEN 'web'
    WHEN lower(strip_ws(v)) IN ('ios', 'iphone', 'ipad', 'ios-app') THEN 'ios'
    WHEN lower(strip_ws(v)) IN ('android', 'android-app') THEN 'android'
    WHEN lower(strip_ws(v)) IN ('email', 'mailer') THEN 'email'
    WHEN lower(strip_ws(v)) IN ('pos', 'scanner', 'kiosk') THEN 'pos'
    ELSE 'other' END;
CREATE MACRO norm_event_type(v) AS CASE trim(regexp_replace(lower(strip_ws(v)), '[^0-9a-z]+', '_', 'g'), '_')
    WHEN 'article_added_to_cart' THEN 'add_to_cart'
    WHEN 'payment_success' THEN 'payment_successful'
    ELSE trim(regexp_replace(lower(strip_ws(v)), '[^0-9a-z]+', '_', 'g'), '_') END;

-- ---- bronze -> current rows (one per identity) ------------------------------------------
-- Immutable types: the first copy wins (file, then line: one ingest time per backfill).
CREATE TABLE cur_view AS
SELECT view_id, session_id, view_timestamp, norm_platform(env_platform) AS platform, page_type, landing_page, is_referral
FROM typed_view
QUALIFY row_number() OVER (PARTITION BY view_id ORDER BY source_file, source_line) = 1;

CREATE TABLE cur_click AS
SELECT click_id, session_id, click_timestamp, norm_platform(env_platform) AS platform, element_clicked, page
FROM typed_click
QUALIFY row_number() OVER (PARTITION BY click_id ORDER BY source_file, source_line) = 1;

CREATE TABLE cur_event AS
SELECT event_id, session_id, norm_event_type(event_type) AS event_type, "timestamp",
       norm_platform(env_platform) AS platform, metadata->>'$.article_id' AS article_id,
       CASE WHEN json_type(metadata, '$.price') IN ('BIGINT', 'UBIGINT', 'DOUBLE')
            THEN (metadata->>'$.price')::DOUBLE END AS price
FROM typed_event
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY source_file, source_line) = 1;

CREATE TABLE cur_activity AS
SELECT activity_id, response_id, activity_type, activity_time, norm_platform(env_platform) AS platform
FROM typed_user_activity
QUALIFY row_number() OVER (PARTITION BY activity_id ORDER BY source_file, source_line) = 1;

-- Users: the newest updated_at (else emitted_at) wins, ties to the later arrival.
CREATE TABLE cur_user AS
SELECT user_id, pii_hash(lower(strip_ws(email))) AS email_hash, sha256(lower(strip_ws(email))) AS email_sha256,
       upper(strip_ws(country)) AS country,
       is_active, signup_date FROM typed_user
QUALIFY row_number() OVER (PARTITION BY user_id
    ORDER BY coalesce(updated_at, env_emitted_at, {NEVER}) DESC, source_file DESC, source_line DESC) = 1;

-- Responses: the newest emitted_at wins; sent_at defaults to emitted_at.
CREATE TABLE cur_response AS
SELECT response_id, event_id, response_type, status, coalesce(sent_at, env_emitted_at) AS sent_at,
       norm_platform(env_platform) AS platform FROM typed_event_response
QUALIFY row_number() OVER (PARTITION BY response_id
    ORDER BY coalesce(env_emitted_at, {NEVER}) DESC, source_file DESC, source_line DESC) = 1;

-- Sessions: field by field, the newest version (emitted_at, then arrival) with a
-- value; a platform that was not sent is no value.
CREATE TABLE cur_session AS
WITH versions AS (
    SELECT *, norm_platform(env_platform) AS platform,
           row_number() OVER (PARTITION BY session_id
               ORDER BY coalesce(env_emitted_at, {NEVER}), source_file, source_line) AS version
    FROM typed_session)
SELECT session_id,
       arg_max(user_id, version) FILTER (WHERE user_id IS NOT NULL) AS user_id,
       coalesce(arg_max(platform, version) FILTER (WHERE platform <> 'unknown'), 'unknown') AS platform,
       arg_max(session_start_time, version) AS session_start_time,
       arg_max(device_type, version) FILTER (WHERE device_type IS NOT NULL) AS device_type,
       arg_max(geo_location, version) FILTER (WHERE geo_location IS NOT NULL) AS geo_location,
       arg_max(experiments, version) FILTER (WHERE experiments IS NOT NULL) AS experiments
FROM versions GROUP BY session_id;

-- ---- silver: joined ------------------------------------------------------------------------
CREATE TABLE session_children AS
SELECT session_id, min(t) AS first_activity_at, max(t) AS last_activity_at,
       arg_min(platform, (t, platform)) AS first_platform
FROM (SELECT session_id, view_timestamp AS t, platform FROM cur_view
      UNION ALL SELECT session_id, click_timestamp, platform FROM cur_click
      UNION ALL SELECT session_id, "timestamp", platform FROM cur_event)
GROUP BY session_id;

-- A session whose record never arrived: date and platform of its earliest child, no user.
CREATE TABLE silver_sessions AS
SELECT session_id, s.user_id,
       CASE WHEN s.session_id IS NULL THEN c.first_platform ELSE s.platform END AS platform,
       coalesce(s.session_start_time, c.first_activity_at) AS session_start_time,
       utc_date(coalesce(s.session_start_time, c.first_activity_at)) AS session_date,
       s.device_type, s.geo_location, c.first_activity_at, c.last_activity_at, s.experiments
FROM cur_session s FULL JOIN session_children c USING (session_id);

CREATE TABLE silver_views AS
SELECT v.view_id, v.session_id, v.view_timestamp, s.user_id, s.platform, v.page_type, v.landing_page, v.is_referral
FROM cur_view v JOIN silver_sessions s USING (session_id);

CREATE TABLE silver_clicks AS
SELECT c.click_id, c.session_id, c.click_timestamp, s.user_id, s.platform, c.element_clicked, c.page
FROM cur_click c JOIN silver_sessions s USING (session_id);

CREATE TABLE silver_events AS
SELECT e.event_id, e.session_id, e.event_type, e."timestamp", s.user_id, s.platform, e.article_id, e.price
FROM cur_event e JOIN silver_sessions s USING (session_id);

-- Unknown parent: no session or user, the record keeps its own platform.
CREATE TABLE silver_event_responses AS
SELECT r.response_id, r.event_id, r.response_type, r.status, r.sent_at, e.session_id, e.user_id,
       CASE WHEN e.event_id IS NULL THEN r.platform ELSE e.platform END AS platform
FROM cur_response r LEFT JOIN silver_events e USING (event_id);

CREATE TABLE silver_user_activity AS
SELECT a.activity_id, a.response_id, a.activity_type, a.activity_time, r.event_id, r.session_id, r.user_id,
       CASE WHEN r.response_id IS NULL THEN a.platform ELSE r.platform END AS platform
FROM cur_activity a LEFT JOIN silver_event_responses r USING (response_id);

-- ---- gold: records known by the end of the as-of day -------------------------------------------
CREATE TABLE g_sessions AS SELECT * FROM silver_sessions WHERE session_start_time < {AS_OF_END};
CREATE TABLE g_views AS SELECT * FROM silver_views WHERE view_timestamp < {AS_OF_END};
CREATE TABLE g_clicks AS SELECT * FROM silver_clicks WHERE click_timestamp < {AS_OF_END};
CREATE TABLE g_events AS SELECT * FROM silver_events WHERE "timestamp" < {AS_OF_END};
CREATE TABLE g_responses AS SELECT * FROM silver_event_responses WHERE sent_at IS NULL OR sent_at < {AS_OF_END};
CREATE TABLE g_activities AS SELECT * FROM silver_user_activity WHERE activity_time < {AS_OF_END};

-- Email confirmations (current status sent/delivered) of a payment event, in that event's session.
CREATE TABLE confirmations AS
SELECT r.response_id, r.sent_at, e.session_id
FROM g_responses r JOIN g_events e ON e.event_id = r.event_id AND e.event_type = 'payment_successful'
WHERE r.response_type = 'email_confirmation' AND r.status IN ('sent', 'delivered');

-- The sequential funnel: each stage at or after the previous one.
CREATE TABLE reached_browse AS
SELECT session_id, min(t) AS t FROM (
    SELECT session_id, view_timestamp AS t FROM g_views
    UNION ALL SELECT session_id, "timestamp" FROM g_events WHERE event_type = 'browse')
GROUP BY session_id;

CREATE TABLE reached_cart AS
SELECT e.session_id, min(e."timestamp") AS t FROM g_events e JOIN reached_browse b USING (session_id)
WHERE e.event_type = 'add_to_cart' AND e."timestamp" >= b.t GROUP BY e.session_id;

CREATE TABLE reached_payment AS
SELECT e.session_id, min(e."timestamp") AS t FROM g_events e JOIN reached_cart c USING (session_id)
WHERE e.event_type = 'payment_successful' AND e."timestamp" >= c.t GROUP BY e.session_id;

CREATE TABLE reached_confirmation AS
SELECT c.session_id, min(c.sent_at) AS t FROM confirmations c JOIN reached_payment USING (session_id)
WHERE c.sent_at IS NOT NULL GROUP BY c.session_id;

CREATE TABLE reached_scan AS
SELECT c.session_id, min(a.activity_time) AS t
FROM g_activities a JOIN confirmations c USING (response_id) JOIN reached_confirmation f ON f.session_id = c.session_id
WHERE a.activity_type = 'barcode_scanned' GROUP BY c.session_id;

CREATE TABLE session_funnel AS
SELECT s.*, b.t AS t1, c.t AS t2, p.t AS t3, f.t AS t4, x.t AS t5,
       (b.t IS NOT NULL)::INT + (c.t IS NOT NULL)::INT + (p.t IS NOT NULL)::INT
       + (f.t IS NOT NULL)::INT + (x.t IS NOT NULL)::INT AS stages
FROM g_sessions s
LEFT JOIN reached_browse b USING (session_id) LEFT JOIN reached_cart c USING (session_id)
LEFT JOIN reached_payment p USING (session_id) LEFT JOIN reached_confirmation f USING (session_id)
LEFT JOIN reached_scan x USING (session_id);

-- ---- fact_funnel_stage -------------------------------------------------------------------------
CREATE TABLE fact_funnel_stage AS
WITH stages AS (
    SELECT sf.*,
           CASE WHEN u.country IS NOT NULL AND u.country <> '' THEN u.country
                WHEN regexp_full_match(upper(strip_ws(sf.geo_location)), '[A-Z]{2}')
                THEN upper(strip_ws(sf.geo_location)) END AS country,
           unnest([1, 2, 3, 4, 5]) AS stage_number,
           unnest([t1, t2, t3, t4, t5]) AS reached_at,
           unnest([NULL, t1, t2, t3, t4]) AS previous_at
    FROM session_funnel sf LEFT JOIN cur_user u USING (user_id))
SELECT session_id, user_id, session_date, platform, device_type, country, stage_number,
       ['browse', 'add_to_cart', 'payment_successful', 'email_confirmation', 'barcode_scanned'][stage_number]
           AS stage_name,
       make_timestamp(reached_at)::TIMESTAMPTZ AS reached_at,
       (reached_at - previous_at) / 1e6 AS seconds_from_previous_stage
FROM stages WHERE reached_at IS NOT NULL;

-- ---- dim_user ----------------------------------------------------------------------------------
CREATE TABLE session_seen AS
SELECT session_id, min(t) AS first_seen_at, max(t) AS last_seen_at FROM (
    SELECT session_id, unnest([session_start_time, first_activity_at, last_activity_at]) AS t FROM g_sessions
    UNION ALL SELECT session_id, sent_at FROM g_responses WHERE session_id IS NOT NULL
    UNION ALL SELECT session_id, activity_time FROM g_activities WHERE session_id IS NOT NULL)
WHERE t IS NOT NULL GROUP BY session_id;

CREATE TABLE dim_user AS
WITH per_user AS (
    SELECT sf.user_id, min(seen.first_seen_at) AS first_seen_at, max(seen.last_seen_at) AS last_seen_at,
           arg_min(sf.platform, (sf.session_start_time, sf.session_id)) AS first_platform,
           count(*) AS lifetime_sessions, max(sf.stages) AS furthest_stage_number
    FROM session_funnel sf JOIN session_seen seen USING (session_id)
    WHERE sf.user_id IS NOT NULL GROUP BY sf.user_id),
payments AS (
    SELECT s.user_id, count(DISTINCT e.event_id) AS lifetime_payments
    FROM g_events e JOIN g_sessions s USING (session_id)
    WHERE e.event_type = 'payment_successful' AND s.user_id IS NOT NULL GROUP BY s.user_id)
SELECT user_id, u.email_hash, u.country, u.is_active, u.signup_date,
       make_timestamp(p.first_seen_at)::TIMESTAMPTZ AS first_seen_at,
       make_timestamp(p.last_seen_at)::TIMESTAMPTZ AS last_seen_at,
       p.first_platform, coalesce(p.lifetime_sessions, 0) AS lifetime_sessions,
       coalesce(pay.lifetime_payments, 0) AS lifetime_payments,
       coalesce(p.furthest_stage_number, 0) AS furthest_stage_number
FROM cur_user u FULL JOIN per_user p USING (user_id) LEFT JOIN payments pay USING (user_id);

-- ---- fact_user_activity: each record on the UTC date of its own time --------------------------
CREATE TABLE fact_user_activity AS
SELECT user_id, activity_date,
       count(*) FILTER (WHERE measure = 'sessions') AS sessions,
       count(*) FILTER (WHERE measure = 'views') AS views,
       count(*) FILTER (WHERE measure = 'clicks') AS clicks,
       count(*) FILTER (WHERE measure = 'browse') AS browse_events,
       count(*) FILTER (WHERE measure = 'add_to_cart') AS add_to_cart_events,
       count(*) FILTER (WHERE measure = 'payment_successful') AS payments,
       count(*) FILTER (WHERE measure = 'confirmation') AS confirmations_sent,
       count(*) FILTER (WHERE measure = 'scan') AS barcode_scans
FROM (
    SELECT user_id, session_date AS activity_date, 'sessions' AS measure FROM g_sessions
    UNION ALL SELECT user_id, utc_date(view_timestamp), 'views' FROM g_views
    UNION ALL SELECT user_id, utc_date(click_timestamp), 'clicks' FROM g_clicks
    UNION ALL SELECT user_id, utc_date("timestamp"), event_type FROM g_events
        WHERE event_type IN ('browse', 'add_to_cart', 'payment_successful')
    UNION ALL SELECT user_id, utc_date(sent_at), 'confirmation' FROM g_responses
        WHERE response_type = 'email_confirmation' AND status IN ('sent', 'delivered') AND sent_at IS NOT NULL
    UNION ALL SELECT user_id, utc_date(activity_time), 'scan' FROM g_activities
        WHERE activity_type = 'barcode_scanned')
WHERE user_id IS NOT NULL
GROUP BY user_id, activity_date;

-- ---- marts: one row per (grain, period_start, platform incl. 'all') ------------------------------
CREATE MACRO period_of(d, grain) AS CASE grain WHEN 'day' THEN d
    ELSE CAST(date_trunc(grain, d) AS DATE) END;

CREATE TABLE mart_conversion_rate AS
WITH per_period AS (
    SELECT period_grain, period_start,
           CASE WHEN grouping(platform) = 1 THEN 'all' ELSE platform END AS platform,
           count(*) FILTER (WHERE stages >= 1) AS sessions_browse,
           count(*) FILTER (WHERE stages >= 2) AS sessions_add_to_cart,
           count(*) FILTER (WHERE stages >= 3) AS sessions_payment,
           count(*) FILTER (WHERE stages >= 4) AS sessions_email_confirmation,
           count(*) FILTER (WHERE stages >= 5) AS sessions_barcode_scanned,
           count(DISTINCT user_id) FILTER (WHERE stages >= 1) AS users_browse,
           count(DISTINCT user_id) FILTER (WHERE stages >= 3) AS users_payment
    FROM (SELECT sf.*, g.grain AS period_grain, period_of(sf.session_date, g.grain) AS period_start
          FROM session_funnel sf CROSS JOIN (VALUES ('day'), ('month'), ('year')) g(grain))
    GROUP BY GROUPING SETS ((period_grain, period_start, platform), (period_grain, period_start)))
SELECT *, rate(sessions_payment, sessions_browse) AS conversion_rate,
       rate(sessions_add_to_cart, sessions_browse) AS cart_rate,
       rate(sessions_payment, sessions_add_to_cart) AS checkout_rate,
       rate(sessions_email_confirmation, sessions_payment) AS confirmation_rate,
       rate(sessions_barcode_scanned, sessions_email_confirmation) AS scan_rate
FROM per_period;

-- Scans resolved through response -> event -> session, plus scans whose
-- response is unknown (own platform, no user, no payment).
CREATE TABLE scans AS
SELECT a.activity_id, a.activity_time, s.user_id, s.platform, pe.event_id AS payment_event_id,
       (a.activity_time - pe."timestamp") / 1e6 AS seconds_payment_to_scan
FROM g_activities a JOIN g_sessions s USING (session_id)
LEFT JOIN g_responses r ON r.response_id = a.response_id
LEFT JOIN g_events pe ON pe.event_id = r.event_id AND pe.event_type = 'payment_successful'
WHERE a.activity_type = 'barcode_scanned'
UNION ALL
SELECT activity_id, activity_time, NULL, platform, NULL, NULL FROM g_activities
WHERE session_id IS NULL AND activity_type = 'barcode_scanned';

-- The median of an even count is the mean of the two middle values.
CREATE TABLE mart_barcode_activity AS
WITH per_period AS (
    SELECT period_grain, period_start,
           CASE WHEN grouping(platform) = 1 THEN 'all' ELSE platform END AS platform,
           count(DISTINCT activity_id) AS barcode_scans,
           count(DISTINCT user_id) AS scanning_users,
           count(DISTINCT payment_event_id) AS scanned_orders,
           list_sort(list(seconds_payment_to_scan) FILTER (WHERE payment_event_id IS NOT NULL)) AS seconds
    FROM (SELECT sc.*, g.grain AS period_grain, period_of(utc_date(sc.activity_time), g.grain) AS period_start
          FROM scans sc CROSS JOIN (VALUES ('day'), ('month'), ('year')) g(grain))
    GROUP BY GROUPING SETS ((period_grain, period_start, platform), (period_grain, period_start)))
SELECT period_grain, period_start, platform, barcode_scans, scanning_users, scanned_orders,
       CASE WHEN len(seconds) = 0 THEN NULL
            WHEN len(seconds) % 2 = 1 THEN seconds[len(seconds) // 2 + 1]
            ELSE (seconds[len(seconds) // 2] + seconds[len(seconds) // 2 + 1]) / 2 END
           AS median_seconds_payment_to_scan
FROM per_period;

-- ---- mart_retargeting: active users whose latest cart went unpaid for 24 hours -----------------
CREATE TABLE user_carts AS
SELECT user_id, session_id, "timestamp" AS t, article_id, price FROM g_events
WHERE event_type = 'add_to_cart' AND user_id IS NOT NULL;

CREATE TABLE last_cart AS
SELECT user_id, max(t) AS t, arg_max(session_id, (t, session_id)) AS session_id FROM user_carts GROUP BY user_id;

CREATE TABLE cart_articles AS
SELECT c.user_id, c.article_id, max(c.price) AS price
FROM user_carts c JOIN last_cart l ON l.user_id = c.user_id AND l.session_id = c.session_id
WHERE c.article_id IS NOT NULL GROUP BY c.user_id, c.article_id;

CREATE TABLE mart_retargeting AS
SELECT l.user_id, u.email_hash, u.email_sha256, make_timestamp(l.t)::TIMESTAMPTZ AS last_cart_at,
       coalesce(a.articles, []::VARCHAR[]) AS carted_articles, a.cart_value, s.platform
FROM last_cart l
JOIN cur_user u ON u.user_id = l.user_id AND u.is_active
LEFT JOIN (SELECT user_id, list(article_id ORDER BY article_id) AS articles, sum(price) AS cart_value
           FROM cart_articles GROUP BY user_id) a ON a.user_id = l.user_id
LEFT JOIN g_sessions s ON s.session_id = l.session_id
WHERE l.t + 86400000000 <= {CLOCK}
  AND NOT EXISTS (SELECT 1 FROM g_events p WHERE p.user_id = l.user_id AND p.event_type = 'payment_successful'
                  AND p."timestamp" BETWEEN l.t AND l.t + 86400000000);

-- ---- mart_ab_test: counts here, statistics in reference.py (statsmodels) -----------------------
CREATE TABLE ab_counts AS
SELECT a.key AS experiment, a.value->>'$' AS variant, count(*) AS sessions,
       count(*) FILTER (WHERE f.stages >= 1) AS sessions_browse,
       count(*) FILTER (WHERE f.stages >= 2) AS sessions_add_to_cart,
       count(*) FILTER (WHERE f.stages >= 3) AS sessions_payment,
       count(*) FILTER (WHERE f.stages >= 4) AS sessions_email_confirmation,
       count(*) FILTER (WHERE f.stages >= 5) AS sessions_barcode_scanned
FROM session_funnel f, json_each(f.experiments) a
GROUP BY ALL;

-- ---- ops_alerts ---------------------------------------------------------------------------------
CREATE MACRO iso_us(us) AS strftime(make_timestamp(us), '%Y-%m-%dT%H:%M:%S.%fZ');
CREATE MACRO alert_key(kind, subject) AS left(sha256(kind || '|' || subject), 32);

CREATE TABLE email_outcomes AS
SELECT * FROM g_responses WHERE response_type = 'email_confirmation' AND sent_at IS NOT NULL;

CREATE TABLE ops_alerts AS
SELECT alert_key('email_failed', response_id) AS alert_id, 'email_failed' AS alert_type,
       make_timestamp(sent_at)::TIMESTAMPTZ AS detected_at,
       event_id, response_id, json_object('status', status)::VARCHAR AS details
FROM email_outcomes WHERE status IN ('failed', 'bounced')
UNION ALL
SELECT alert_key('confirmation_missing', e.event_id), 'confirmation_missing',
       make_timestamp(e."timestamp" + 1800000000)::TIMESTAMPTZ,
       e.event_id, NULL,
       json_object('deadline', iso_us(e."timestamp" + 1800000000), 'paid_at', iso_us(e."timestamp"))::VARCHAR
FROM g_events e
WHERE e.event_type = 'payment_successful' AND e."timestamp" + 1800000000 <= {CLOCK}
  AND NOT EXISTS (SELECT 1 FROM email_outcomes r WHERE r.event_id = e.event_id
                  AND r.status IN ('sent', 'delivered') AND r.sent_at <= e."timestamp" + 1800000000)
UNION ALL
SELECT alert_key('email_failure_rate', iso_us(ws)), 'email_failure_rate', make_timestamp(ws + 900000000)::TIMESTAMPTZ,
       NULL, NULL,
       json_object('confirmations', n, 'failed', failed, 'failure_rate', round(failed / n, 6),
                   'window_end', iso_us(ws + 900000000), 'window_start', iso_us(ws))::VARCHAR
FROM (SELECT sent_at - sent_at % 900000000 AS ws, count(*) AS n,
             count(*) FILTER (WHERE status IN ('failed', 'bounced')) AS failed
      FROM email_outcomes WHERE status IN ('sent', 'delivered', 'failed', 'bounced') GROUP BY ws)
WHERE n >= 20 AND failed * 100 > 5 * n AND ws + 900000000 <= {CLOCK};
