-- Per-user hourly summaries. The worker inserts signed DELTAS: a row is the change to a
-- (user, hour); a late event's correction is just another delta. Summing rows is therefore
-- exact at any moment, and the materialized views below, which see inserted blocks (not merged
-- state), roll the deltas up exactly too. Query with FINAL or GROUP BY (see the README).
-- `hour` is the start of the hour in ANALYTICS_TIME_ZONE, as a UTC instant; `day` is that
-- hour's date in the same zone, computed by the worker so no view depends on the zone.
CREATE TABLE IF NOT EXISTS hourly_user_summary
(
    hour DateTime('UTC'),
    day Date,
    user_id UInt64,
    num_questions Int64,
    num_answers Int64,
    num_upvotes Int64,
    num_downvotes Int64,
    question_views Int64,
    answer_views Int64,
    num_comments Int64,
    num_retags Int64,
    num_vote_cancels Int64,
    num_logins Int64,
    num_events Int64,
    time_on_site Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (user_id, hour, day)
SETTINGS non_replicated_deduplication_window = 10000;

-- Daily per-user summaries: the day's hours summed, built from the same deltas.
CREATE TABLE IF NOT EXISTS daily_user_summary
(
    day Date,
    user_id UInt64,
    num_questions Int64,
    num_answers Int64,
    num_upvotes Int64,
    num_downvotes Int64,
    question_views Int64,
    answer_views Int64,
    num_comments Int64,
    num_retags Int64,
    num_vote_cancels Int64,
    num_logins Int64,
    num_events Int64,
    time_on_site Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (user_id, day)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS daily_user_summary_mv TO daily_user_summary AS
SELECT
    day,
    user_id,
    sum(num_questions) AS num_questions,
    sum(num_answers) AS num_answers,
    sum(num_upvotes) AS num_upvotes,
    sum(num_downvotes) AS num_downvotes,
    sum(question_views) AS question_views,
    sum(answer_views) AS answer_views,
    sum(num_comments) AS num_comments,
    sum(num_retags) AS num_retags,
    sum(num_vote_cancels) AS num_vote_cancels,
    sum(num_logins) AS num_logins,
    sum(num_events) AS num_events,
    sum(time_on_site) AS time_on_site
FROM hourly_user_summary
GROUP BY day, user_id;

-- Sessions: one row per session once collapsed. A session that a late event extends or merges
-- is cancelled (sign -1, the old values) and written again (sign +1); query with FINAL.
CREATE TABLE IF NOT EXISTS sessions
(
    session_id String,
    user_id UInt64,
    start DateTime64(3, 'UTC'),
    last_activity DateTime64(3, 'UTC'),
    duration UInt32,
    ip String,
    user_agent String,
    event_count UInt32,
    sign Int8
)
ENGINE = CollapsingMergeTree(sign)
PARTITION BY toYYYYMM(start)
ORDER BY (user_id, start, session_id)
SETTINGS non_replicated_deduplication_window = 10000;
