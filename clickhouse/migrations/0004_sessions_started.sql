-- Sessions per hour and per day: `num_sessions_started` counts the sessions whose first activity
-- falls in the hour, so "sessions per day" (and per group, later) is a plain sum like the other
-- figures. The daily view is recreated to carry it; the tables were empty before the worker
-- that writes them.
ALTER TABLE hourly_user_summary ADD COLUMN IF NOT EXISTS num_sessions_started Int64;

ALTER TABLE daily_user_summary ADD COLUMN IF NOT EXISTS num_sessions_started Int64;

DROP VIEW IF EXISTS daily_user_summary_mv;

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
    sum(time_on_site) AS time_on_site,
    sum(num_sessions_started) AS num_sessions_started
FROM hourly_user_summary
GROUP BY day, user_id;
