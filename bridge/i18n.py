"""The bot's replies in English and Persian. Short; every refusal says why and what to do instead."""

from __future__ import annotations

import re
from typing import Any

_ARABIC_SCRIPT = re.compile(r"[\u0600-\u06FF\u0750-\u077F\uFB50-\uFDFF\uFE70-\uFEFF]")

MESSAGES: dict[str, dict[str, str]] = {
    "help": {
        "en": (
            "I manage Kanal channels. Commands (the ! is optional here):\n"
            "• create <handle> [title…] — a new channel, reachable as #<handle>:{domain}\n"
            "• list — your channels\n"
            "• info <handle> — details of a channel\n"
            "• title <handle> <text> — rename the channel\n"
            "• about <handle> <text> — set its description\n"
            "• promote <handle> <@user:domain> — make someone an admin\n"
            "• demote <handle> <@user:domain> — remove an admin\n"
            "• delete <handle> — delete a channel (asks for confirmation)\n"
            "Handles: 5–32 characters, a–z, 0–9 and _, starting with a letter."
        ),
        "fa": (
            "من کانال‌های کانال (Kanal) را مدیریت می‌کنم. فرمان‌ها (علامت ! اختیاری است):\n"
            "• create <handle> [عنوان…] — کانال تازه با نشانی #<handle>:{domain}\n"
            "• list — کانال‌های شما\n"
            "• info <handle> — جزئیات کانال\n"
            "• title <handle> <متن> — تغییر عنوان\n"
            "• about <handle> <متن> — تغییر توضیحات\n"
            "• promote <handle> <@user:domain> — افزودن مدیر\n"
            "• demote <handle> <@user:domain> — برداشتن مدیر\n"
            "• delete <handle> — حذف کانال (با تأیید)\n"
            "شناسه: ۵ تا ۳۲ نویسه از a–z، ۰–۹ و _، که با حرف آغاز شود."
        ),
    },
    "help_backstage": {
        "en": (
            "Everything you post here is published in #{handle} as {title}. Commands:\n"
            "• !silent <text> — publish without a notification\n"
            "• !pin / !unpin — as a reply to a post, pin or unpin its published copy\n"
            "• !signatures on|off — append the author's name to posts\n"
            "• !stats — subscribers and posts\n"
            "Edits and deletions here are mirrored in the channel."
        ),
        "fa": (
            "هر چه اینجا بفرستید در #{handle} با نام {title} منتشر می‌شود. فرمان‌ها:\n"
            "• !silent <متن> — انتشار بدون اعلان\n"
            "• !pin / !unpin — در پاسخ به یک پست، سنجاق کردن یا برداشتن سنجاق نسخهٔ منتشرشده\n"
            "• !signatures on|off — افزودن نام نویسنده به پست‌ها\n"
            "• !stats — مشترکان و پست‌ها\n"
            "ویرایش و حذف پیام‌ها اینجا در کانال هم اعمال می‌شود."
        ),
    },
    "create_usage": {
        "en": "Usage: create <handle> [title…], for example: create news Daily News",
        "fa": "روش استفاده: create <handle> [عنوان…]، برای نمونه: create news اخبار روز",
    },
    "invalid_handle": {
        "en": "{error}. Choose 5–32 characters from a–z, 0–9 and _, starting with a letter.",
        "fa": "شناسهٔ «{handle}» پذیرفته نیست. ۵ تا ۳۲ نویسه از a–z، ۰–۹ و _ برگزینید که با حرف آغاز شود.",
    },
    "handle_taken": {
        "en": "The handle {handle} is already taken. Try another one.",
        "fa": "شناسهٔ {handle} پیش‌تر گرفته شده است. شناسهٔ دیگری برگزینید.",
    },
    "invalid_title": {
        "en": "That title cannot be used: {error}. Titles are one line, at most 128 characters.",
        "fa": "این عنوان پذیرفته نیست: {error}. عنوان یک خط و حداکثر ۱۲۸ نویسه است.",
    },
    "creating": {
        "en": "Creating #{handle}:{domain} …",
        "fa": "در حال ساختن #{handle}:{domain} …",
    },
    "created": {
        "en": (
            "✅ #{handle}:{domain} is ready. I invited you to its backstage room: what you post there is "
            "published in the channel as {title}."
        ),
        "fa": (
            "✅ کانال #{handle}:{domain} آماده است. شما را به اتاق پشت صحنه دعوت کردم: هر چه آنجا بفرستید "
            "با نام {title} در کانال منتشر می‌شود."
        ),
    },
    "create_failed": {
        "en": "Creating #{handle} failed: {error}. Please try again later or tell your server's operator.",
        "fa": "ساختن #{handle} ناموفق بود: {error}. بعداً دوباره تلاش کنید یا به گردانندهٔ سرور خبر دهید.",
    },
    "local_only": {
        "en": "Only users of {domain} can manage channels here. Ask the operator of your own server.",
        "fa": "فقط کاربران {domain} می‌توانند اینجا کانال بسازند. از گردانندهٔ سرور خودتان بپرسید.",
    },
    "no_channel": {
        "en": "There is no channel {handle}. Send `list` to see yours.",
        "fa": "کانالی با شناسهٔ {handle} وجود ندارد. برای دیدن کانال‌هایتان `list` را بفرستید.",
    },
    "not_admin": {
        "en": "You are not an owner or admin of #{handle}, so you cannot {action} it. Ask its owner, {owner}.",
        "fa": "شما مالک یا مدیر #{handle} نیستید، پس نمی‌توانید آن را {action}. از مالک آن، {owner}، بخواهید.",
    },
    "owner_only": {
        "en": "Only the owner of #{handle} ({owner}) can {action}.",
        "fa": "فقط مالک #{handle} ({owner}) می‌تواند {action}.",
    },
    "list_empty": {
        "en": "You have no channels yet. Create one with: create <handle> [title…]",
        "fa": "هنوز کانالی ندارید. با این فرمان بسازید: create <handle> [عنوان…]",
    },
    "list": {"en": "Your channels:\n{lines}", "fa": "کانال‌های شما:\n{lines}"},
    "info": {
        "en": (
            "#{handle}:{domain} — {title}\n{about}Owner: {owner}\nAdmins: {admins}\nSubscribers: {subscribers}\n"
            "Posts: {posts}\nSignatures: {signatures}\nStatus: {status}"
        ),
        "fa": (
            "#{handle}:{domain} — {title}\n{about}مالک: {owner}\nمدیران: {admins}\nمشترکان: {subscribers}\n"
            "پست‌ها: {posts}\nامضا: {signatures}\nوضعیت: {status}"
        ),
    },
    "usage": {"en": "Usage: {usage}", "fa": "روش استفاده: {usage}"},
    "title_set": {"en": "#{handle} is now titled “{title}”.", "fa": "عنوان #{handle} اکنون «{title}» است."},
    "about_set": {"en": "The description of #{handle} is updated.", "fa": "توضیحات #{handle} به‌روز شد."},
    "invalid_user": {
        "en": "{user} is not a Matrix user id. Write it in full, like @alice:{domain}.",
        "fa": "{user} شناسهٔ کاربری ماتریکس نیست. آن را کامل بنویسید، مانند @alice:{domain}.",
    },
    "promoted": {
        "en": "{user} is now an admin of #{handle}; I invited them to the backstage room.",
        "fa": "{user} اکنون مدیر #{handle} است؛ او را به اتاق پشت صحنه دعوت کردم.",
    },
    "already_admin": {
        "en": "{user} is already an admin of #{handle}.",
        "fa": "{user} از پیش مدیر #{handle} است.",
    },
    "demoted": {
        "en": "{user} is no longer an admin of #{handle} and was removed from the backstage room.",
        "fa": "{user} دیگر مدیر #{handle} نیست و از اتاق پشت صحنه برداشته شد.",
    },
    "not_an_admin": {
        "en": "{user} is not an admin of #{handle}, so there is nothing to demote.",
        "fa": "{user} مدیر #{handle} نیست، پس چیزی برای برداشتن نیست.",
    },
    "cannot_demote_owner": {
        "en": "{user} owns #{handle}; the owner cannot be demoted.",
        "fa": "{user} مالک #{handle} است؛ مالک را نمی‌توان برداشت.",
    },
    "delete_confirm": {
        "en": (
            "Deleting #{handle} archives its rooms: everyone is removed, the room leaves the directory and the "
            "alias #{handle}:{domain} is freed. This cannot be undone. To go ahead, send `confirm delete {handle}` "
            "within 5 minutes; `cancel` stops it."
        ),
        "fa": (
            "حذف #{handle} اتاق‌هایش را بایگانی می‌کند: همه بیرون می‌روند، از فهرست عمومی برداشته می‌شود و نشانی "
            "#{handle}:{domain} آزاد می‌شود. این کار برگشت‌پذیر نیست. برای ادامه ظرف ۵ دقیقه "
            "`confirm delete {handle}` را بفرستید؛ `cancel` آن را لغو می‌کند."
        ),
    },
    "deleted": {
        "en": "#{handle} is deleted; its rooms are archived and the handle is free.",
        "fa": "#{handle} حذف شد؛ اتاق‌هایش بایگانی شد و شناسه آزاد است.",
    },
    "nothing_to_confirm": {
        "en": "There is nothing waiting for confirmation (requests expire after 5 minutes). Send the command again.",
        "fa": "چیزی در انتظار تأیید نیست (درخواست‌ها پس از ۵ دقیقه منقضی می‌شوند). فرمان را دوباره بفرستید.",
    },
    "cancelled": {"en": "Cancelled; nothing was changed.", "fa": "لغو شد؛ چیزی تغییر نکرد."},
    "unknown_command": {
        "en": "I don't know the command “{name}”. Send `help` for the list.",
        "fa": "فرمان «{name}» را نمی‌شناسم. برای فهرست فرمان‌ها `help` را بفرستید.",
    },
    "unknown_backstage_command": {
        "en": "I don't know the command “!{name}”. Send !help for the list; to publish a line starting with !, "
        "start it with a space.",
        "fa": "فرمان «!{name}» را نمی‌شناسم. برای فهرست !help را بفرستید.",
    },
    "encrypted_management": {
        "en": (
            "This chat is end-to-end encrypted, so I cannot read it — Kanal never reads encrypted messages. "
            "Please start a new direct chat with {bot} with encryption turned off (in Element: Start chat, "
            "then open “Show advanced” and switch off “Enable end-to-end encryption”), and send `help` there."
        ),
        "fa": (
            "این گفتگو رمزگذاری سرتاسری شده است، پس نمی‌توانم آن را بخوانم — Kanal هرگز پیام رمزگذاری‌شده نمی‌خواند. "
            "لطفاً گفتگوی مستقیم تازه‌ای با {bot} بدون رمزگذاری باز کنید و آنجا `help` را بفرستید."
        ),
    },
    "encrypted_backstage": {
        "en": (
            "This backstage room is now end-to-end encrypted, so I cannot read or relay posts here — Kanal never "
            "reads encrypted messages, and Matrix cannot turn encryption off again. Nothing posted here since "
            "is published. Please ask your server's operator for a new backstage room for #{handle}."
        ),
        "fa": (
            "این اتاق پشت صحنه اکنون رمزگذاری شده است، پس نمی‌توانم پست‌ها را بخوانم یا منتشر کنم — Kanal هرگز پیام "
            "رمزگذاری‌شده نمی‌خواند و در ماتریکس نمی‌توان رمزگذاری را خاموش کرد. از گردانندهٔ سرور یک اتاق پشت صحنهٔ "
            "تازه برای #{handle} بخواهید."
        ),
    },
    "not_backstage_admin": {
        "en": "You are not an admin of #{handle}, so your messages here are not published. Ask its owner, {owner}.",
        "fa": "شما مدیر #{handle} نیستید، پس پیام‌هایتان اینجا منتشر نمی‌شود. از مالک آن، {owner}، بخواهید.",
    },
    "silent_usage": {
        "en": "Usage: !silent <text> — publishes the text without a notification.",
        "fa": "روش استفاده: !silent <متن> — متن را بدون اعلان منتشر می‌کند.",
    },
    "pin_usage": {
        "en": "Send !{name} as a reply to the post you want to {name}.",
        "fa": "!{name} را در پاسخ به پستی بفرستید که می‌خواهید سنجاق آن تغییر کند.",
    },
    "pin_unknown": {
        "en": "That message was not published in the channel, so there is nothing to {name}.",
        "fa": "آن پیام در کانال منتشر نشده است، پس چیزی برای سنجاق کردن نیست.",
    },
    "pinned": {"en": "📌 Pinned in the channel.", "fa": "📌 در کانال سنجاق شد."},
    "unpinned": {"en": "Unpinned in the channel.", "fa": "سنجاق در کانال برداشته شد."},
    "signatures_usage": {
        "en": "Usage: !signatures on|off (now {state}).",
        "fa": "روش استفاده: !signatures on|off (اکنون {state}).",
    },
    "signatures_set": {
        "en": "Signatures are now {state}.",
        "fa": "امضا اکنون {state} است.",
    },
    "stats": {
        "en": "#{handle}: {subscribers} subscribers, {posts} posts published.",
        "fa": "#{handle}: {subscribers} مشترک، {posts} پست منتشرشده.",
    },
    "channel_unavailable": {
        "en": "#{handle} is {status}; nothing here is published.",
        "fa": "#{handle} در وضعیت {status} است؛ چیزی از اینجا منتشر نمی‌شود.",
    },
    "on": {"en": "on", "fa": "روشن"},
    "off": {"en": "off", "fa": "خاموش"},
}


def detect_language(text: str, default: str) -> str:
    return "fa" if _ARABIC_SCRIPT.search(text) else default


def t(lang: str, key: str, **values: Any) -> str:
    variants = MESSAGES[key]
    template = variants.get(lang) or variants["en"]
    return template.format(**values)
