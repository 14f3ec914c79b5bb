"""The bot's notices in an encrypted chat or backstage it cannot read (sent only while Kanal's own
encryption is off: with it on, bridge/service.py decrypts those rooms) name both ways out and claim
nothing that Kanal with encryption on would contradict."""

from __future__ import annotations

import pytest

from bridge.text.i18n import t

NOTICES = {
    "encrypted_management": {"bot": "@kanal:example.org"},
    "encrypted_backstage": {"handle": "news"},
}


@pytest.mark.parametrize("lang", ["en", "fa"])
@pytest.mark.parametrize("key", sorted(NOTICES))
def test_an_encryption_notice_names_kanals_encryption_and_the_homeserver_default(key: str, lang: str) -> None:
    text = t(lang, key, **NOTICES[key])
    assert text != t("en", key, **NOTICES[key]) or lang == "en"  # translated, not the English fallback
    assert "encryption.enabled" in text  # turn on Kanal's encryption (README, Encryption; kanal doctor)
    assert "encryption_enabled_by_default_for_room_type: off" in text  # or the homeserver's default off
    assert "kanal doctor" in text


@pytest.mark.parametrize("key", sorted(NOTICES))
def test_an_encryption_notice_does_not_say_kanal_never_reads_encrypted_messages(key: str) -> None:
    # With encryption.enabled Kanal does decrypt its own chats and backstage rooms.
    assert "never reads encrypted" not in t("en", key, **NOTICES[key])
    assert "هرگز پیام رمزگذاری‌شده نمی‌خواند" not in t("fa", key, **NOTICES[key])
