"""`python -m forum_analytics` is the `forum-analytics` command."""

from forum_analytics.cli import main

main()
