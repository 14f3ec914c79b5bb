"""Channels and their rooms: lifecycle, roles, registration, hosting policy, private channels, and the
rooms where people run them (management chat, backstage, operators' room)."""
