-- Dimensions and group rollups (issue 4). The worker writes every table here from
-- `forum-users` and `forum-groups` and from its steps; ClickHouse only rolls up.

-- The latest profile of each user (query with FINAL). A purge deletes the user's row.
CREATE TABLE IF NOT EXISTS users
(
    user_id UInt64,
    username String,
    email String,
    joined_at DateTime64(3, 'UTC'),
    is_active Bool,
    role LowCardinality(String),
    group_ids Array(UInt64),
    organization_id Nullable(UInt64),
    updated_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY user_id
SETTINGS non_replicated_deduplication_window = 10000;

-- Groups as the forum (or `groups from-email-domains`) last described them (query with FINAL).
-- Figures are kept for every group; the summary views show the `used_for_analytics` ones, so
-- switching the flag on shows the group's whole history at once, and switching it off hides it.
CREATE TABLE IF NOT EXISTS groups
(
    group_id UInt64,
    name String,
    used_for_analytics Bool,
    updated_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY group_id
SETTINGS non_replicated_deduplication_window = 10000;

-- Membership history: one row per interval [since, until) of a user in a group (until NULL:
-- still a member). Query with FINAL: a closed or corrected interval is a newer version, a
-- removed one is deleted (is_deleted = 1). `*_hour` and `*_day` are the local hour and date
-- (ANALYTICS_TIME_ZONE) of since and until, computed by the worker as for the summaries.
-- `organization`: the interval comes from the user's email domain (sticky; see the README).
CREATE TABLE IF NOT EXISTS group_members
(
    group_id UInt64,
    user_id UInt64,
    since DateTime64(3, 'UTC'),
    until Nullable(DateTime64(3, 'UTC')),
    since_hour DateTime('UTC'),
    since_day Date,
    until_hour Nullable(DateTime('UTC')),
    until_day Nullable(Date),
    organization Bool,
    version UInt64,
    is_deleted UInt8
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (group_id, user_id, since)
SETTINGS non_replicated_deduplication_window = 10000;

-- Each member's hour in each group they were in at any moment of that hour: the user's
-- hourly deltas fanned out to the groups, plus membership corrections (a membership that
-- arrives or changes later adds or removes the user's past hours). Signed deltas, like
-- hourly_user_summary; every group figure is built from these rows.
CREATE TABLE IF NOT EXISTS group_member_hours
(
    group_id UInt64,
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
    time_on_site Int64,
    num_sessions_started Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (group_id, hour, user_id, day)
SETTINGS non_replicated_deduplication_window = 10000;

-- The same per day, built by ClickHouse from the hourly rows.
CREATE TABLE IF NOT EXISTS group_member_days
(
    group_id UInt64,
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
    time_on_site Int64,
    num_sessions_started Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (group_id, day, user_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS group_member_days_mv TO group_member_days AS
SELECT
    group_id,
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
    sum(time_on_site) AS time_on_site,
    sum(num_sessions_started) AS num_sessions_started
FROM group_member_hours
GROUP BY group_id, day, user_id;

-- GDPR purges: when, which request, and how many rows went (no user id: the row would be one).
CREATE TABLE IF NOT EXISTS purge_audit
(
    purged_at DateTime64(3, 'UTC'),
    topic String,
    partition UInt16,
    offset UInt64,
    rows_deleted Map(String, UInt64)
)
ENGINE = MergeTree
ORDER BY purged_at
SETTINGS non_replicated_deduplication_window = 10000;

-- The analyst-facing group summaries: one row per (group, period) of every analytics group,
-- from the period of its first membership or activity to the latest period with any data,
-- idle periods included. num_users: members at the end of the period; num_users_added:
-- memberships whose `since` falls in it; num_active_users: distinct members with an event in
-- it. The figures are sums of the members' hours while they were members.

CREATE VIEW IF NOT EXISTS hourly_group_summary AS
WITH
    analytics_groups AS (SELECT group_id FROM groups FINAL WHERE used_for_analytics),
    members AS (
        SELECT group_id, since_hour AS first, until_hour AS last
        FROM group_members FINAL
        WHERE group_id IN analytics_groups
    ),
    changes AS (
        SELECT group_id, hour, sum(net) AS net, sum(added) AS added
        FROM
        (
            SELECT group_id, first AS hour, 1 AS net, 1 AS added FROM members
            UNION ALL
            SELECT group_id, assumeNotNull(last) AS hour, -1 AS net, 0 AS added
            FROM members WHERE last IS NOT NULL
        )
        GROUP BY group_id, hour
    ),
    per_user AS (
        SELECT
            group_id,
            hour,
            user_id,
            sum(source.num_events) AS events_total,
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
            sum(time_on_site) AS time_on_site,
            sum(num_sessions_started) AS num_sessions_started
        FROM group_member_hours AS source
        WHERE group_id IN analytics_groups
        GROUP BY group_id, hour, user_id
    ),
    activity AS (
        SELECT
            group_id,
            hour,
            countIf(events_total > 0) AS num_active_users,
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
            sum(time_on_site) AS time_on_site,
            sum(num_sessions_started) AS num_sessions_started
        FROM per_user
        GROUP BY group_id, hour
    ),
    known AS (
        SELECT group_id, hour FROM changes
        UNION ALL
        SELECT group_id, hour FROM activity
    ),
    spine AS (
        SELECT group_id, arrayJoin(arrayMap(i -> first + toIntervalHour(i), range(toUInt32(dateDiff('hour', first, latest.last)) + 1))) AS hour
        FROM
        (
            SELECT group_id, min(hour) AS first
            FROM known
            GROUP BY group_id
        ) AS bounds
        CROSS JOIN (SELECT max(hour) AS last FROM known) AS latest
    )
SELECT
    spine.group_id AS group_id,
    spine.hour AS hour,
    toInt64(sum(changes.net) OVER (PARTITION BY spine.group_id ORDER BY spine.hour)) AS num_users,
    toInt64(changes.added) AS num_users_added,
    toInt64(activity.num_active_users) AS num_active_users,
    activity.num_questions AS num_questions,
    activity.num_answers AS num_answers,
    activity.num_upvotes AS num_upvotes,
    activity.num_downvotes AS num_downvotes,
    activity.question_views AS question_views,
    activity.answer_views AS answer_views,
    activity.num_comments AS num_comments,
    activity.num_retags AS num_retags,
    activity.num_vote_cancels AS num_vote_cancels,
    activity.num_logins AS num_logins,
    activity.num_events AS num_events,
    activity.time_on_site AS time_on_site,
    activity.num_sessions_started AS num_sessions_started
FROM spine
LEFT JOIN changes ON changes.group_id = spine.group_id AND changes.hour = spine.hour
LEFT JOIN activity ON activity.group_id = spine.group_id AND activity.hour = spine.hour;


CREATE VIEW IF NOT EXISTS daily_group_summary AS
WITH
    analytics_groups AS (SELECT group_id FROM groups FINAL WHERE used_for_analytics),
    members AS (
        SELECT group_id, since_day AS first, until_day AS last
        FROM group_members FINAL
        WHERE group_id IN analytics_groups
    ),
    changes AS (
        SELECT group_id, day, sum(net) AS net, sum(added) AS added
        FROM
        (
            SELECT group_id, first AS day, 1 AS net, 1 AS added FROM members
            UNION ALL
            SELECT group_id, assumeNotNull(last) AS day, -1 AS net, 0 AS added
            FROM members WHERE last IS NOT NULL
        )
        GROUP BY group_id, day
    ),
    per_user AS (
        SELECT
            group_id,
            day,
            user_id,
            sum(source.num_events) AS events_total,
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
            sum(time_on_site) AS time_on_site,
            sum(num_sessions_started) AS num_sessions_started
        FROM group_member_days AS source
        WHERE group_id IN analytics_groups
        GROUP BY group_id, day, user_id
    ),
    activity AS (
        SELECT
            group_id,
            day,
            countIf(events_total > 0) AS num_active_users,
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
            sum(time_on_site) AS time_on_site,
            sum(num_sessions_started) AS num_sessions_started
        FROM per_user
        GROUP BY group_id, day
    ),
    known AS (
        SELECT group_id, day FROM changes
        UNION ALL
        SELECT group_id, day FROM activity
    ),
    spine AS (
        SELECT group_id, arrayJoin(arrayMap(i -> first + toIntervalDay(i), range(toUInt32(dateDiff('day', first, latest.last)) + 1))) AS day
        FROM
        (
            SELECT group_id, min(day) AS first
            FROM known
            GROUP BY group_id
        ) AS bounds
        CROSS JOIN (SELECT max(day) AS last FROM known) AS latest
    )
SELECT
    spine.group_id AS group_id,
    spine.day AS day,
    toInt64(sum(changes.net) OVER (PARTITION BY spine.group_id ORDER BY spine.day)) AS num_users,
    toInt64(changes.added) AS num_users_added,
    toInt64(activity.num_active_users) AS num_active_users,
    activity.num_questions AS num_questions,
    activity.num_answers AS num_answers,
    activity.num_upvotes AS num_upvotes,
    activity.num_downvotes AS num_downvotes,
    activity.question_views AS question_views,
    activity.answer_views AS answer_views,
    activity.num_comments AS num_comments,
    activity.num_retags AS num_retags,
    activity.num_vote_cancels AS num_vote_cancels,
    activity.num_logins AS num_logins,
    activity.num_events AS num_events,
    activity.time_on_site AS time_on_site,
    activity.num_sessions_started AS num_sessions_started
FROM spine
LEFT JOIN changes ON changes.group_id = spine.group_id AND changes.day = spine.day
LEFT JOIN activity ON activity.group_id = spine.group_id AND activity.day = spine.day;
