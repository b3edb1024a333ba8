-- Sign-in links from the forum: each JWT is accepted once. Its `jti` (or, without one, a SHA-256
-- of the token) is kept, so a link copied from a browser's history or a log cannot be replayed.
-- Kept in ClickHouse, not in one API process, so every API process refuses a token any of them
-- accepted. No TTL: only `events` ever gets one (ANALYTICS_RAW_EVENTS_TTL_DAYS); a row per
-- sign-in is small, and rows whose `expires_at` has passed may be deleted at any time.
CREATE TABLE IF NOT EXISTS api_sign_in_tokens
(
    token_key String,
    used_at DateTime64(3, 'UTC'),
    expires_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY token_key
SETTINGS non_replicated_deduplication_window = 1000;
