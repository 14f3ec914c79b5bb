"""Channels moving in and out: a Telegram export imported into a channel, a channel exported as one."""
