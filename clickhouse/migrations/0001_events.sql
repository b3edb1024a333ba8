-- Raw events, one row per event as received from `forum-events`.
-- ReplacingMergeTree on the event id: a resent event counts once (query with FINAL).
-- _topic/_partition/_offset/_index record where each row came from, for idempotency and audits.
CREATE TABLE IF NOT EXISTS events
(
    id String,
    type LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    user_id UInt64,
    ip String DEFAULT '',
    user_agent String DEFAULT '',
    object_type LowCardinality(String) DEFAULT '',
    object_id Nullable(UInt64),
    thread_id Nullable(UInt64),
    post_id Nullable(UInt64),
    received_at DateTime64(3, 'UTC'),
    _topic LowCardinality(String),
    _partition UInt16,
    _offset UInt64,
    _index UInt32,
    INDEX idx_user_id user_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_thread_id thread_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, id)
SETTINGS non_replicated_deduplication_window = 10000;
