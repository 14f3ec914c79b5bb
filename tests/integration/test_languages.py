"""Languages as people meet them from a Matrix client (matrix-nio): `language fa|en`, Persian script,
and right-to-left text published untouched."""

from __future__ import annotations

import pytest

from bridge.text.i18n import t
from tests.support import Env

pytestmark = pytest.mark.integration

PERSIAN_HELP = "من کانال‌های کانال (Kanal) را مدیریت می‌کنم"
ENGLISH_HELP = "I manage Kanal channels"


async def test_language_fa_then_en_switches_the_replies_in_every_room(env: Env) -> None:
    alice = await env.user("alice")
    room = await alice.open_management_room()
    assert "You have not chosen a language" in await alice.ask(room, "language", "language <code>")

    assert "فارسی" in await alice.ask(room, "language fa", "از این پس")
    help_text = await alice.ask(room, "help", PERSIAN_HELP)
    assert help_text == t("fa", "help", domain=env.domain)
    assert "فارسی" in await alice.ask(room, "!language", "به انتخاب شما")

    # A new chat with the bot greets her in her language.
    second = await alice.open_management_room()
    welcome = [
        e for e in await alice.messages(second) if e["sender"] == env.bot and e["type"] == "m.room.message"
    ]
    assert welcome[0]["content"]["body"] == t("fa", "help", domain=env.domain)

    # The choice belongs to the person, so it holds in a backstage room too.
    handle = env.handle("zaban")
    await alice.ask(room, f"create {handle} Languages", "آماده است", timeout=30)
    backstage = await alice.wait_invite(lambda _rid, r: f"(#{handle})" in (r.name or ""))
    await alice.join(backstage)
    assert await alice.ask(backstage, "!help", "هر چه اینجا بفرستید") == t(
        "fa", "help_backstage", handle=handle, title="Languages"
    )

    await alice.ask(backstage, "!language en", "From now on I reply to you in English")
    assert await alice.ask(room, "help", ENGLISH_HELP) == t("en", "help", domain=env.domain)
    await alice.ask(room, "language auto", "Language choice removed")
    await alice.ask(room, "help", ENGLISH_HELP)


async def test_a_persian_script_command_gets_a_persian_reply_without_a_setting(env: Env) -> None:
    bob = await env.user("bob")
    room = await bob.open_management_room()

    # The README's example, as written: `راهنما` is the help, in Persian, with no setting.
    assert await bob.ask(room, "راهنما", PERSIAN_HELP) == t("fa", "help", domain=env.domain)
    reply = await bob.ask(room, "ناشناخته", "را نمی‌شناسم")
    assert reply == t("fa", "unknown_command", name="ناشناخته")
    await bob.ask(room, "help", ENGLISH_HELP)
    assert "“xx”" in await bob.ask(room, "language xx", "en (English), fa (فارسی)")


async def test_every_command_has_its_persian_word_and_numbers_are_persian(env: Env) -> None:
    dara = await env.user("dara")
    room = await dara.open_management_room()
    handle = env.handle("farsi")

    created = await dara.ask(room, f"ساخت {handle} خبرها", "آماده است", timeout=30)
    assert f"#{handle}:{env.domain}" in created
    listed = await dara.ask(room, "فهرست", handle)
    assert f"خبرها ({t('fa', 'role_owner')})" in listed

    # Numeric arguments in Persian or Arabic-Indic digits; the numbers in the reply in Persian digits.
    kept = await dara.ask(room, f"نگهداری {handle} ۳۰", "۳۰")
    assert kept == t("fa", "retention_set", handle=handle, days=30)
    kept = await dara.ask(room, f"نگهداری {handle} ٤٥", "۴۵")
    assert kept == t("fa", "retention_set", handle=handle, days=45)
    info = await dara.ask(room, f"اطلاعات {handle}", "ویراستاران و ناظران")
    assert "مشترکان: ۰" in info

    backstage = await dara.wait_invite(lambda _rid, r: f"(#{handle})" in (r.name or ""))
    await dara.join(backstage)
    assert await dara.ask(backstage, "!راهنما", "هر چه اینجا بفرستید") == t(
        "fa", "help_backstage", handle=handle, title="خبرها"
    )

    # The Persian word of `delete`, and of `confirm delete`, as the reply tells.
    asked = await dara.ask(room, f"حذف {handle}", f"تأیید حذف {handle}")
    assert asked == t("fa", "delete_confirm", handle=handle, domain=env.domain)
    deleted = await dara.ask(room, f"تأیید حذف {handle}", "حذف شد")
    assert deleted == t("fa", "deleted", handle=handle)


async def test_right_to_left_titles_and_posts_pass_through_untouched(env: Env) -> None:
    carol = await env.user("carol")
    room = await carol.open_management_room()
    handle = env.handle("akhbar")
    title = "اخبار روز"
    created = await carol.ask(room, f"create {handle} {title}", "آماده است", timeout=30)
    assert title in created
    backstage = await carol.wait_invite(lambda _rid, r: f"(#{handle})" in (r.name or ""))
    await carol.join(backstage)
    broadcast = await carol.join(f"#{handle}:{env.domain}")
    assert (await carol.state(broadcast, "m.room.name"))["name"] == title

    post = "سلام دنیا! این یک\u200cپست است: \u200fنسخهٔ ۲\u200f — with English {inside} and \u202bنقل\u202c"
    await carol.text(backstage, post)
    published = await carol.wait_for(
        broadcast, lambda e: e.get("content", {}).get("body", "").startswith("سلام")
    )
    assert published["content"]["body"] == post
