"""A channel's public room, written to through one seam (bridge.broadcast.seam)."""
