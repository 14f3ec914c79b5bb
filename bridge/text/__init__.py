"""Text, pure: the bot's catalogues (i18n), handles and titles (names), command parsing."""
