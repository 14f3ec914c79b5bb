"""Publishing into a channel: the channel-write seam, edits, drafts, scheduled posts, forwarding, polls."""
