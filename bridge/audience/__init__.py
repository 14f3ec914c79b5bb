"""Who reads a channel: comments, reactions, views and statistics (with the `!stats` chart)."""
