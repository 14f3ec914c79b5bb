"""Compliance: pre-publication hooks, notices, decisions with statements of reasons, appeals, audit log.

Acts on public channel content and channel registration only; never on private or encrypted rooms.
"""
