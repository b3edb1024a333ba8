"""The forum side: a simulated Q&A forum that sends its users' activity to Kafka.

`forum-analytics simulate` uses it for demos, tests and benchmarks (Askbot's own test-content
command is broken: askbot-reference.md §7). The real forum's side, the Django integration,
lives in `streams/` with the producer SDK.
"""
