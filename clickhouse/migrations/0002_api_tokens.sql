-- API tokens for the report API. Only a SHA-256 of each token is stored; the token itself is
-- shown once, when created. A revocation is a newer version of the row.
CREATE TABLE IF NOT EXISTS api_tokens
(
    token_id String,
    name String,
    role LowCardinality(String),
    token_sha256 String,
    created_at DateTime64(3, 'UTC'),
    revoked_at Nullable(DateTime64(3, 'UTC')),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY token_id
SETTINGS non_replicated_deduplication_window = 1000;
