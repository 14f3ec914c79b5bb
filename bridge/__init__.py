"""Kanal's channel domain: channels, backstage relay, the bot's commands, storage, the CLI."""

__version__ = "0.1.0"
