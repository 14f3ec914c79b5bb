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
            "• rename <handle> <new handle> — change the handle (the old one keeps working for a while)\n"
            "• transfer <handle> <@user:domain> — hand the channel over (they must accept <handle>)\n"
            "• accept <handle> / decline <handle> — answer a transfer offered to you\n"
            "• retention <handle> <days|off|default> — how long the homeserver keeps the channel's history\n"
            "• report <link to a channel post> [category:] <reason> — report a post to the moderators\n"
            "• appeal <decision number> <your reasons> — contest a moderation decision\n"
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
            "• rename <handle> <شناسهٔ تازه> — تغییر شناسه (شناسهٔ قبلی تا مدتی کار می‌کند)\n"
            "• transfer <handle> <@user:domain> — واگذاری کانال (گیرنده باید accept <handle> بفرستد)\n"
            "• accept <handle> / decline <handle> — پذیرفتن یا نپذیرفتن واگذاری\n"
            "• retention <handle> <days|off|default> — مدت نگهداری تاریخچهٔ کانال روی سرور\n"
            "• report <پیوند پست کانال> [دسته:] <دلیل> — گزارش یک پست به ناظران\n"
            "• appeal <شمارهٔ تصمیم> <دلایل شما> — اعتراض به تصمیم نظارتی\n"
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
            "• !reactions on|off|only 👍 🔥 — which reactions readers may use\n"
            "• !schedule <2026-12-01 09:00|+2h|tomorrow 8:00> <text> — publish later; !scheduled, !unschedule <n>\n"
            "• !token new|list|revoke <name> — publishing-API tokens (owner)\n"
            "Edits and deletions here are mirrored in the channel."
        ),
        "fa": (
            "هر چه اینجا بفرستید در #{handle} با نام {title} منتشر می‌شود. فرمان‌ها:\n"
            "• !silent <متن> — انتشار بدون اعلان\n"
            "• !pin / !unpin — در پاسخ به یک پست، سنجاق کردن یا برداشتن سنجاق نسخهٔ منتشرشده\n"
            "• !signatures on|off — افزودن نام نویسنده به پست‌ها\n"
            "• !stats — مشترکان و پست‌ها\n"
            "• !reactions on|off|only 👍 🔥 — واکنش‌های مجاز برای خوانندگان\n"
            "• !schedule <2026-12-01 09:00|+2h|tomorrow 8:00> <متن> — انتشار زمان‌بندی‌شده؛ !scheduled و !unschedule <n>\n"
            "• !token new|list|revoke <name> — توکن‌های API انتشار (مالک)\n"
            "ویرایش و حذف پیام‌ها اینجا در کانال هم اعمال می‌شود."
        ),
    },
    "create_usage": {
        "en": "Usage: create <handle> [title…], for example: create dailynews Daily News",
        "fa": "روش استفاده: create <handle> [عنوان…]، برای نمونه: create dailynews اخبار روز",
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
            "Posts: {posts}\nSignatures: {signatures}\nStatus: {status}{verified}"
        ),
        "fa": (
            "#{handle}:{domain} — {title}\n{about}مالک: {owner}\nمدیران: {admins}\nمشترکان: {subscribers}\n"
            "پست‌ها: {posts}\nامضا: {signatures}\nوضعیت: {status}{verified}"
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
    "verified_mark": {
        "en": "\nVerified ✓ (by the operators of this server)",
        "fa": "\nتأییدشده ✓ (از سوی گردانندگان این سرور)",
    },
    "handle_reserved": {
        "en": "The handle {handle} is reserved. Ask the operators of this server if it should be yours.",
        "fa": "شناسهٔ {handle} رزرو شده است. اگر باید از آنِ شما باشد، از گردانندگان این سرور بپرسید.",
    },
    "handle_confusable": {
        "en": "The handle {handle} looks too much like {other}, which is already taken or reserved; readers could mistake one for the other. Choose a handle that looks different.",
        "fa": "شناسهٔ {handle} بسیار شبیه {other} است که گرفته یا رزرو شده؛ خوانندگان ممکن است آن‌ها را با هم اشتباه بگیرند. شناسهٔ متفاوتی برگزینید.",
    },
    "handle_held": {
        "en": "The handle {handle} was in use until recently and is held back until {until}, so nobody can pose as its former channel. Choose another one.",
        "fa": "شناسهٔ {handle} تا همین اواخر در استفاده بوده و تا {until} نگه داشته می‌شود تا کسی خود را جای کانال پیشین جا نزند. شناسهٔ دیگری برگزینید.",
    },
    "handle_requested": {
        "en": "Someone has already asked for the handle {handle}; their request is waiting for the operators. Choose another one.",
        "fa": "کس دیگری شناسهٔ {handle} را درخواست کرده و درخواستش در انتظار گردانندگان است. شناسهٔ دیگری برگزینید.",
    },
    "title_impersonates": {
        "en": "The title “{title}” reads like the title of the verified channel #{handle}; it could mislead readers. Choose a different title.",
        "fa": "عنوان «{title}» همانند عنوان کانال تأییدشدهٔ #{handle} خوانده می‌شود و ممکن است خوانندگان را گمراه کند. عنوان دیگری برگزینید.",
    },
    "quota_reached": {
        "en": "You already have {limit} channels (or requests), the most this server allows per person. Delete one, or ask the operators.",
        "fa": "شما هم‌اکنون {limit} کانال (یا درخواست) دارید که بیشترین اندازهٔ مجاز برای هر نفر است. یکی را حذف کنید یا از گردانندگان بپرسید.",
    },
    "token_required": {
        "en": "Creating channels here needs a registration token from the operators. When you have one, send: create {handle} [title…] --token <token>",
        "fa": "ساختن کانال در اینجا به توکن ثبت از سوی گردانندگان نیاز دارد. وقتی توکن گرفتید بفرستید: create {handle} [عنوان…] --token <token>",
    },
    "token_unknown": {
        "en": "That registration token is not valid. Check it, or ask the operators for one.",
        "fa": "این توکن ثبت معتبر نیست. آن را بررسی کنید یا از گردانندگان توکن بخواهید.",
    },
    "token_revoked": {
        "en": "That registration token was revoked by the operators. Ask them for a new one.",
        "fa": "این توکن ثبت را گردانندگان باطل کرده‌اند. توکن تازه‌ای بخواهید.",
    },
    "token_expired": {
        "en": "That registration token has expired. Ask the operators for a new one.",
        "fa": "این توکن ثبت منقضی شده است. توکن تازه‌ای بخواهید.",
    },
    "token_used_up": {
        "en": "That registration token has been used as many times as it allows. Ask the operators for a new one.",
        "fa": "این توکن ثبت به اندازهٔ مجاز به کار رفته است. توکن تازه‌ای بخواهید.",
    },
    "request_sent": {
        "en": "Your request for #{handle} is number {id}. The operators of this server review requests; I will tell you here when they decide.",
        "fa": "درخواست شما برای #{handle} شمارهٔ {id} است. گردانندگان این سرور درخواست‌ها را بررسی می‌کنند و نتیجه را همین‌جا به شما می‌گویم.",
    },
    "request_new": {
        "en": "Request #{id}: {user} asks for #{handle} “{title}”.\nReply: approve {id} — or — reject {id} <reason>",
        "fa": "درخواست #{id}: {user} کانال #{handle} «{title}» را می‌خواهد.\nپاسخ: approve {id} — یا — reject {id} <دلیل>",
    },
    "request_approved": {
        "en": "Your request for #{handle} was approved.",
        "fa": "درخواست شما برای #{handle} پذیرفته شد.",
    },
    "request_approved_op": {
        "en": "Request #{id} approved: creating #{handle} for {user}.",
        "fa": "درخواست #{id} پذیرفته شد: ساختن #{handle} برای {user}.",
    },
    "request_rejected": {
        "en": "Your request for #{handle} was rejected by the operators (decision #{decision}). Their reason: {reason}\nYou may ask again with another handle or title, or appeal within {days} days: appeal {decision} <your reasons>. A person who did not take the decision reviews it.",
        "fa": "گردانندگان درخواست شما برای #{handle} را نپذیرفتند (تصمیم #{decision}). دلیل آن‌ها: {reason}\nمی‌توانید با شناسه یا عنوان دیگری دوباره درخواست دهید یا ظرف {days} روز اعتراض کنید: appeal {decision} <دلایل شما>. کسی که تصمیم را نگرفته آن را بررسی می‌کند.",
    },
    "request_rejected_op": {
        "en": "Request #{id} rejected; {user} has been told the reason.",
        "fa": "درخواست #{id} رد شد؛ دلیل به {user} گفته شد.",
    },
    "request_not_pending": {
        "en": "There is no pending request number {id}. Send requests to see them.",
        "fa": "درخواست در انتظاری با شمارهٔ {id} نیست. برای دیدن فهرست requests را بفرستید.",
    },
    "request_cannot_approve": {
        "en": "Request #{id} cannot be approved now: {why}\nReject it with a reason instead.",
        "fa": "درخواست #{id} اکنون پذیرفتنی نیست: {why}\nبه جای آن با ذکر دلیل ردش کنید.",
    },
    "requests_none": {
        "en": "No requests are waiting.",
        "fa": "درخواستی در انتظار نیست.",
    },
    "requests_list": {
        "en": "Waiting requests:\n{lines}",
        "fa": "درخواست‌های در انتظار:\n{lines}",
    },
    "operator_only": {
        "en": "Only the operators of this server can use this room's commands.",
        "fa": "فقط گردانندگان این سرور می‌توانند از فرمان‌های این اتاق استفاده کنند.",
    },
    "operator_help": {
        "en": "Operator commands:\n• requests — channel requests waiting for a decision\n• approve <n> / reject <n> <reason> — decide a request (the reason reaches the requester)\n• token new [--uses N] [--expires 7d] [label…] / tokens / token revoke <n> — registration tokens\n• reserve <handle> / unreserve <handle> / reserved — the reserved handles\n• verify <handle> / unverify <handle> — the verified mark\n• recover <handle> <@user:domain> <reason> — give a channel a new owner\nEvery decision is logged.",
        "fa": "فرمان‌های گردانندگان:\n• requests — درخواست‌های کانال در انتظار تصمیم\n• approve <n> / reject <n> <دلیل> — تصمیم دربارهٔ درخواست (دلیل به درخواست‌کننده می‌رسد)\n• token new [--uses N] [--expires 7d] [برچسب…] / tokens / token revoke <n> — توکن‌های ثبت\n• reserve <handle> / unreserve <handle> / reserved — شناسه‌های رزروشده\n• verify <handle> / unverify <handle> — نشان تأیید\n• recover <handle> <@user:domain> <دلیل> — سپردن کانال به مالک تازه\nهمهٔ تصمیم‌ها ثبت می‌شوند.",
    },
    "token_usage": {
        "en": "{error}. Usage: token new [--uses N] [--expires 30m|12h|7d|2w] [label…], tokens, token revoke <n>",
        "fa": "{error}. روش استفاده: token new [--uses N] [--expires 30m|12h|7d|2w] [برچسب…]، tokens، token revoke <n>",
    },
    "token_created": {
        "en": "New registration token (shown only now; I keep only its hash):\n{token}\n{details}",
        "fa": "توکن ثبت تازه (فقط همین یک بار نشان داده می‌شود؛ تنها چکیدهٔ آن نگه داشته می‌شود):\n{token}\n{details}",
    },
    "token_not_found": {
        "en": "No token {ref}. Send tokens to see them.",
        "fa": "توکن {ref} پیدا نشد. برای دیدن فهرست tokens را بفرستید.",
    },
    "token_revoked_op": {
        "en": "Revoked: {details}",
        "fa": "باطل شد: {details}",
    },
    "tokens_none": {
        "en": "No registration tokens yet. Make one with: token new",
        "fa": "هنوز توکن ثبتی نیست. با token new بسازید.",
    },
    "tokens_list": {
        "en": "Registration tokens:\n{lines}",
        "fa": "توکن‌های ثبت:\n{lines}",
    },
    "reserved_added": {
        "en": "#{handle} is reserved: only operators can create it.",
        "fa": "#{handle} رزرو شد: فقط گردانندگان می‌توانند آن را بسازند.",
    },
    "reserved_removed": {
        "en": "#{handle} is no longer reserved.",
        "fa": "#{handle} دیگر رزرو نیست.",
    },
    "reserved_in_config": {
        "en": "#{handle} is reserved in {path} (channels.reserved_handles); remove it there and restart.",
        "fa": "#{handle} در {path} رزرو شده است (channels.reserved_handles)؛ آن را آنجا بردارید و دوباره راه‌اندازی کنید.",
    },
    "reserved_not": {
        "en": "#{handle} is not reserved.",
        "fa": "#{handle} رزرو نیست.",
    },
    "reserved_list": {
        "en": "Reserved in the configuration: {config}\nReserved by operators: {added}",
        "fa": "رزروشده در پیکربندی: {config}\nرزروشده از سوی گردانندگان: {added}",
    },
    "verified_set": {
        "en": "#{handle} is verified: the mark shows in its topic and in `info`.",
        "fa": "#{handle} تأیید شد: نشان آن در موضوع اتاق و در info دیده می‌شود.",
    },
    "unverified_set": {
        "en": "#{handle} is no longer verified.",
        "fa": "#{handle} دیگر تأییدشده نیست.",
    },
    "recovered_op": {
        "en": "#{handle} now belongs to {user} (was {previous}, who stays an admin).",
        "fa": "#{handle} اکنون از آنِ {user} است (پیش‌تر {previous} که مدیر می‌ماند).",
    },
    "recovered_owner": {
        "en": "The operators made you the owner of #{handle}. Their reason: {reason}",
        "fa": "گردانندگان شما را مالک #{handle} کردند. دلیل آن‌ها: {reason}",
    },
    "rename_same": {
        "en": "#{handle} already has that handle.",
        "fa": "#{handle} همین شناسه را دارد.",
    },
    "renamed": {
        "en": "#{old} is now #{handle}:{domain}. The old address keeps leading here for {days} days; after that it is held back so nobody can take it over.",
        "fa": "#{old} اکنون #{handle}:{domain} است. نشانی پیشین تا {days} روز به همین کانال می‌رسد و پس از آن نگه داشته می‌شود تا کسی آن را نگیرد.",
    },
    "transfer_local_only": {
        "en": "{user} cannot receive the channel: the new owner must be a user of {domain}.",
        "fa": "{user} نمی‌تواند کانال را بگیرد: مالک تازه باید کاربر {domain} باشد.",
    },
    "transfer_self": {
        "en": "You already own #{handle}.",
        "fa": "شما هم‌اکنون مالک #{handle} هستید.",
    },
    "transfer_offered": {
        "en": "I offered #{handle} to {user}. It becomes theirs when they send “accept {handle}” to me ({bot}) within 7 days; until then nothing changes.",
        "fa": "#{handle} را به {user} پیشنهاد دادم. اگر ظرف ۷ روز «accept {handle}» را برای من ({bot}) بفرستند، از آنِ آن‌ها می‌شود؛ تا آن زمان چیزی تغییر نمی‌کند.",
    },
    "transfer_incoming": {
        "en": "{owner} offers you the channel #{handle}. Send “accept {handle}” to become its owner, or “decline {handle}”.",
        "fa": "{owner} کانال #{handle} را به شما پیشنهاد می‌دهد. برای مالک شدن «accept {handle}» و برای نپذیرفتن «decline {handle}» را بفرستید.",
    },
    "transfer_none": {
        "en": "Nobody has offered you #{handle} (or the offer expired).",
        "fa": "کسی #{handle} را به شما پیشنهاد نکرده است (یا پیشنهاد منقضی شده است).",
    },
    "transfer_done": {
        "en": "You are now the owner of #{handle}; {previous} stays an admin.",
        "fa": "اکنون شما مالک #{handle} هستید؛ {previous} مدیر می‌ماند.",
    },
    "transfer_done_previous": {
        "en": "{user} accepted: #{handle} is theirs now, and you stay an admin.",
        "fa": "{user} پذیرفت: #{handle} اکنون از آنِ اوست و شما مدیر می‌مانید.",
    },
    "transfer_declined": {
        "en": "You declined #{handle}; nothing changed.",
        "fa": "#{handle} را نپذیرفتید؛ چیزی تغییر نکرد.",
    },
    "retention_set": {
        "en": "The homeserver now keeps #{handle}'s history for {days} days.",
        "fa": "سرور اکنون تاریخچهٔ #{handle} را {days} روز نگه می‌دارد.",
    },
    "retention_off": {
        "en": "The homeserver now keeps all of #{handle}'s history.",
        "fa": "سرور اکنون همهٔ تاریخچهٔ #{handle} را نگه می‌دارد.",
    },
    "retention_default": {
        "en": "#{handle} follows this server's history policy again.",
        "fa": "#{handle} دوباره از سیاست نگهداری تاریخچهٔ این سرور پیروی می‌کند.",
    },
    "report_usage": {
        "en": "Usage: report <link to a channel post, or its event id> [category:] <reason>, for example: report https://matrix.to/#/!room:server/$event spam: the same ad every minute",
        "fa": "روش استفاده: report <پیوند پست کانال یا شناسهٔ رویداد> [دسته:] <دلیل>",
    },
    "report_not_public": {
        "en": "I only take reports about posts published in public channels here. Private chats and encrypted rooms are never read or moderated.",
        "fa": "من فقط گزارش پست‌های منتشرشده در کانال‌های عمومی را می‌پذیرم. گفت‌وگوهای خصوصی و اتاق‌های رمزگذاری‌شده هرگز خوانده یا نظارت نمی‌شوند.",
    },
    "report_received": {
        "en": "Thank you: your notice #{id} is received and goes to the moderators. I will tell you here what they decide, with their reasons.",
        "fa": "سپاس: گزارش #{id} شما دریافت شد و به ناظران می‌رسد. تصمیم و دلایل آن را همین‌جا به شما می‌گویم.",
    },
    "appeal_usage": {
        "en": "Usage: appeal <decision number> <your reasons>, for example: appeal 12 the post quotes the law, it does not break it",
        "fa": "روش استفاده: appeal <شمارهٔ تصمیم> <دلایل شما>",
    },
    "appeal_not_yours": {
        "en": "There is no decision #{id} you can appeal: appeals come from the channel's owner or admins, or from whoever sent the notice.",
        "fa": "تصمیم #{id} که شما بتوانید به آن اعتراض کنید وجود ندارد: اعتراض از سوی مالک یا مدیران کانال یا فرستندهٔ گزارش پذیرفته می‌شود.",
    },
    "appeal_too_late": {
        "en": "Decision #{id} could be appealed until {deadline}; that time is over. You may still turn to an out-of-court dispute settlement body or a court.",
        "fa": "مهلت اعتراض به تصمیم #{id} تا {deadline} بود و گذشته است. همچنان می‌توانید به نهاد حل اختلاف یا دادگاه مراجعه کنید.",
    },
    "appeal_pending": {
        "en": "Decision #{id} already has an open appeal, or is no longer in force.",
        "fa": "برای تصمیم #{id} اعتراضی در جریان است یا این تصمیم دیگر اجرا نمی‌شود.",
    },
    "appeal_received": {
        "en": "Your appeal #{id} against decision #{decision} is received. A person who did not take the decision reviews it; I will tell you the outcome here.",
        "fa": "اعتراض #{id} شما به تصمیم #{decision} دریافت شد. کسی که تصمیم را نگرفته آن را بررسی می‌کند و نتیجه را همین‌جا به شما می‌گویم.",
    },
    "post_held": {
        "en": "Your post is held for review by the moderators (h{id}) before it appears in #{handle}. You will hear the outcome here.",
        "fa": "پست شما پیش از انتشار در #{handle} برای بررسی ناظران نگه داشته شد (h{id}). نتیجه را همین‌جا خواهید دید.",
    },
    "posting_restricted": {
        "en": "Posting in #{handle} is suspended until {until} by decision #{decision}; nothing is published until then. The statement of reasons was sent here; you may appeal it from your chat with me.",
        "fa": "انتشار در #{handle} تا {until} با تصمیم #{decision} متوقف است و تا آن زمان چیزی منتشر نمی‌شود. بیانیهٔ دلایل اینجا فرستاده شد؛ می‌توانید از گفت‌وگو با من به آن اعتراض کنید.",
    },
    "reactions_usage": {
        "en": "Usage: !reactions on | off | only <reactions…> (at most {max}), for example: !reactions only 👍 ❤️ 🔥. Now: {state}.",
        "fa": "روش استفاده: !reactions on | off | only <واکنش‌ها…> (حداکثر {max})، برای نمونه: !reactions only 👍 ❤️ 🔥. اکنون: {state}.",
    },
    "reactions_too_many": {
        "en": "At most {max} reactions can be allowed; you named {count}. Choose fewer, for example: !reactions only 👍 ❤️ 🔥",
        "fa": "حداکثر {max} واکنش را می‌توان مجاز کرد و شما {count} واکنش نام بردید. کمتر انتخاب کنید، برای نمونه: !reactions only 👍 ❤️ 🔥",
    },
    "reactions_key_too_long": {
        "en": "“{reaction}” is too long for a reaction: a reaction is at most {max} characters. Name emoji or short words.",
        "fa": "«{reaction}» برای واکنش بیش از حد بلند است: هر واکنش حداکثر {max} نویسه است. ایموجی یا واژه‌های کوتاه بنویسید.",
    },
    "reactions_on": {
        "en": "Reactions in #{handle} are on: readers may react with anything.",
        "fa": "واکنش‌ها در #{handle} روشن است: خوانندگان با هر چیزی می‌توانند واکنش نشان دهند.",
    },
    "reactions_off": {
        "en": "Reactions in #{handle} are off: readers can no longer react. Reactions already given stay.",
        "fa": "واکنش‌ها در #{handle} خاموش است: خوانندگان دیگر نمی‌توانند واکنش نشان دهند. واکنش‌های پیشین می‌مانند.",
    },
    "reactions_only": {
        "en": "Readers of #{handle} may now react only with {keys}. This is best-effort: Matrix cannot refuse a single reaction, so other reactions are removed shortly after they are sent, and apps may show them for a moment.",
        "fa": "خوانندگان #{handle} اکنون فقط با {keys} می‌توانند واکنش نشان دهند. این کار با بیشترین تلاش انجام می‌شود: ماتریکس نمی‌تواند یک واکنش خاص را نپذیرد، پس واکنش‌های دیگر کمی پس از فرستادن حذف می‌شوند و ممکن است برنامه‌ها آن‌ها را لحظه‌ای نشان دهند.",
    },
    "reactions_removed_reason": {
        "en": "This channel allows only these reactions: {keys}",
        "fa": "این کانال فقط این واکنش‌ها را می‌پذیرد: {keys}",
    },
    "reactions_removed_off": {
        "en": "Reactions are off in this channel.",
        "fa": "واکنش‌ها در این کانال خاموش است.",
    },
    "schedule_usage": {
        "en": "Usage: !schedule <when> <text>, or !schedule <when> as a reply to the message to publish. <when> is a time in this channel's zone, {zone}: 2026-12-01 09:00, 18:30, today 18:30, tomorrow 8:00, or from now +30m, +2h, +1d (+45s for a quick test). !scheduled lists what is waiting; !unschedule <number> cancels.",
        "fa": "روش استفاده: !schedule <زمان> <متن>، یا !schedule <زمان> در پاسخ به پیامی که باید منتشر شود. <زمان> به وقت منطقهٔ زمانی این کانال ({zone}) است: 2026-12-01 09:00، 18:30، today 18:30 (امروز)، tomorrow 8:00 (فردا)، یا از اکنون +30m، +2h، +1d (+45s برای آزمایش سریع). !scheduled فهرست انتظار را نشان می‌دهد و !unschedule <شماره> لغو می‌کند.",
    },
    "schedule_bad_when": {
        "en": "“{when}” is not a time I can read. Write 2026-12-01 09:00, 18:30, today 18:30, tomorrow 8:00, +30m, +2h or +1d (times are in {zone}).",
        "fa": "«{when}» زمانی نیست که بتوانم بخوانم. بنویسید 2026-12-01 09:00، 18:30، today 18:30، tomorrow 8:00، +30m، +2h یا +1d (زمان‌ها به وقت {zone} هستند).",
    },
    "schedule_bad_zone": {
        "en": "This channel's time zone “{zone}” is not one I know, so I cannot read times. Zone names are IANA names such as Europe/Berlin or Asia/Tehran; relative times such as +2h still work.",
        "fa": "منطقهٔ زمانی این کانال («{zone}») را نمی‌شناسم، پس نمی‌توانم زمان‌ها را بخوانم. نام منطقه‌ها نام‌های IANA مانند Europe/Berlin یا Asia/Tehran هستند؛ زمان‌های نسبی مانند +2h همچنان کار می‌کنند.",
    },
    "schedule_past": {
        "en": "{when} is in the past: it is now {now} in {zone}. Pick a later time.",
        "fa": "{when} گذشته است: اکنون به وقت {zone} ساعت {now} است. زمان دیرتری برگزینید.",
    },
    "schedule_too_far": {
        "en": "{when} is more than a year ahead; posts can be scheduled at most {days} days in advance.",
        "fa": "{when} بیش از یک سال دیگر است؛ پست‌ها را حداکثر {days} روز زودتر می‌توان زمان‌بندی کرد.",
    },
    "schedule_no_such_time": {
        "en": "{when} does not exist in {zone}: the clocks skip that hour for daylight saving time. Pick another time.",
        "fa": "{when} در {zone} وجود ندارد: ساعت‌ها برای تغییر ساعت تابستانی از روی آن می‌پرند. زمان دیگری برگزینید.",
    },
    "schedule_full": {
        "en": "#{handle} already has {limit} posts waiting to be published, the most it may have. Cancel one with !unschedule <number> first (!scheduled lists them).",
        "fa": "#{handle} هم‌اکنون {limit} پست در انتظار انتشار دارد که بیشترین اندازهٔ مجاز است. نخست یکی را با !unschedule <شماره> لغو کنید (!scheduled آن‌ها را فهرست می‌کند).",
    },
    "schedule_draft_unusable": {
        "en": "I cannot schedule the message you replied to: only text, media and stickers I can read can be published. Reply to another message, or write the text after the time.",
        "fa": "نمی‌توانم پیامی را که به آن پاسخ دادید زمان‌بندی کنم: فقط متن، رسانه و استیکری که بتوانم بخوانم منتشر می‌شود. به پیام دیگری پاسخ دهید یا متن را پس از زمان بنویسید.",
    },
    "scheduled": {
        "en": "Scheduled: post {id} will be published in #{handle} at {due} ({zone}). !scheduled lists what is waiting; !unschedule {id} cancels it.",
        "fa": "زمان‌بندی شد: پست {id} در {due} ({zone}) در #{handle} منتشر می‌شود. !scheduled فهرست انتظار را نشان می‌دهد و !unschedule {id} آن را لغو می‌کند.",
    },
    "scheduled_list": {
        "en": "Waiting to be published in #{handle} (times in {zone}):\n{items}\n!unschedule <number> cancels one.",
        "fa": "در انتظار انتشار در #{handle} (به وقت {zone}):\n{items}\n!unschedule <شماره> یکی را لغو می‌کند.",
    },
    "scheduled_more": {
        "en": "… and {count} more",
        "fa": "… و {count} پست دیگر",
    },
    "scheduled_none": {
        "en": "Nothing is waiting to be published in #{handle}. Schedule a post with !schedule <when> <text>.",
        "fa": "هیچ پستی در #{handle} در انتظار انتشار نیست. با !schedule <زمان> <متن> پستی را زمان‌بندی کنید.",
    },
    "unschedule_usage": {
        "en": "Usage: !unschedule <number>, for example: !unschedule 12 (!scheduled lists the numbers).",
        "fa": "روش استفاده: !unschedule <شماره>، برای نمونه: !unschedule 12 (!scheduled شماره‌ها را فهرست می‌کند).",
    },
    "unschedule_unknown": {
        "en": "No post {id} is waiting to be published in #{handle}: it may have been published or cancelled already. !scheduled lists those that are waiting.",
        "fa": "پست {id} در #{handle} در انتظار انتشار نیست: شاید پیش‌تر منتشر یا لغو شده باشد. !scheduled پست‌های در انتظار را فهرست می‌کند.",
    },
    "unscheduled": {
        "en": "Cancelled: post {id} will not be published in #{handle}.",
        "fa": "لغو شد: پست {id} در #{handle} منتشر نمی‌شود.",
    },
    "schedule_restricted": {
        "en": "Scheduled post {id} was not published: posting in #{handle} is suspended until {until}. Schedule it again for a later time if you still want it out.",
        "fa": "پست زمان‌بندی‌شدهٔ {id} منتشر نشد: انتشار در #{handle} تا {until} متوقف است. اگر هنوز انتشار آن را می‌خواهید، آن را برای زمانی دیرتر دوباره زمان‌بندی کنید.",
    },
    "schedule_failed": {
        "en": "Scheduled post {id} could not be published in #{handle} and was cancelled; the operator's log says why. Schedule it again or post it yourself.",
        "fa": "پست زمان‌بندی‌شدهٔ {id} در #{handle} منتشر نشد و لغو شد؛ دلیل آن در گزارش اپراتور آمده است. آن را دوباره زمان‌بندی کنید یا خودتان بفرستید.",
    },
    "role_required": {
        "en": "Only the {roles} of #{handle} may do that. Ask its owner, {owner}, for a role (promote <handle> <@user> editor|moderator).",
        "fa": "فقط {roles} ِ #{handle} می‌توانند این کار را بکنند. برای گرفتن نقش از مالک آن، {owner}، بخواهید (promote <handle> <@user> editor|moderator).",
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
