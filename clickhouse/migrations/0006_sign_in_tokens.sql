-- Sign-in links from the forum: each JWT is accepted once. Its `jti` (or, without one, a SHA-256
-- of the token) is kept until the token expires, so a link copied from a browser's history or a
-- log cannot be replayed. Kept in ClickHouse, not in one API process, so every API process
-- refuses a token any of them accepted.
CREATE TABLE IF NOT EXISTS api_sign_in_tokens
(
    token_key String,
    used_at DateTime64(3, 'UTC'),
    expires_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY token_key
TTL expires_at + INTERVAL 1 DAY
SETTINGS non_replicated_deduplication_window = 1000;
