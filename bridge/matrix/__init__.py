"""Matrix content, pure: power levels and initial state of channel rooms, relay planning, footers, relations."""
