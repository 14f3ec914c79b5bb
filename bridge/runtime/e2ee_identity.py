"""The bot's cross-signing identity: the keys that sign its device, so clients see one identity (issue 17).

Matrix cross-signing: a master key (the identity), signing a self-signing key, which signs the user's
devices; and a user-signing key, for signing other people (never used by the bot, made because clients
expect all three). The keys are Ed25519 from the `cryptography` package, kept sealed in the crypto
store (`signing` rows); what is signed is the object's canonical JSON without its `signatures` and
`unsigned` (the Matrix specification's "Signing JSON").
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bridge.text.canonical import canonical_json

USAGES = ("master", "self_signing", "user_signing")


def unpadded(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


class SigningKey:
    """One cross-signing key (its private half, 32 bytes)."""

    def __init__(self, private: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(private)
        self.private = private
        self.public = unpadded(self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate().private_bytes_raw())

    @property
    def key_id(self) -> str:
        return f"ed25519:{self.public}"

    def sign(self, value: dict[str, Any]) -> str:
        unsigned = {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}
        return unpadded(self._key.sign(canonical_json(unsigned).encode()))

    def signed(self, user_id: str, value: dict[str, Any]) -> dict[str, Any]:
        """`value` with this key's signature added (others it has are kept), without `unsigned`."""
        result = {k: v for k, v in value.items() if k != "unsigned"}
        signatures = {user: dict(keys) for user, keys in (value.get("signatures") or {}).items()}
        signatures.setdefault(user_id, {})[self.key_id] = self.sign(value)
        result["signatures"] = signatures
        return result


def key_object(user_id: str, usage: str, key: SigningKey) -> dict[str, Any]:
    return {"user_id": user_id, "usage": [usage], "keys": {key.key_id: key.public}}


def upload_body(user_id: str, keys: dict[str, SigningKey]) -> dict[str, Any]:
    """The body of `POST /keys/device_signing/upload`: the master key, and the other two signed by it."""
    master = keys["master"]
    return {
        "master_key": key_object(user_id, "master", master),
        "self_signing_key": master.signed(user_id, key_object(user_id, "self_signing", keys["self_signing"])),
        "user_signing_key": master.signed(user_id, key_object(user_id, "user_signing", keys["user_signing"])),
    }


def has_signature(value: dict[str, Any], user_id: str, key: SigningKey) -> bool:
    return key.key_id in ((value.get("signatures") or {}).get(user_id) or {})
