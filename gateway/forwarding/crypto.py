"""Destination credentials encrypted at rest: Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under a key
derived with HKDF-SHA256 from the server setting `BACKCHANNEL_ENCRYPTION_KEY`.

The setting may list several keys, comma-separated: the first encrypts, every one decrypts, so a key is rotated by
putting the new one first, re-sealing (`Vault.reseal`), then dropping the old one. HKDF does not stretch a weak
password, so a key must be random and long (`generate_key()`); shorter ones are refused.
"""

from __future__ import annotations

import base64
import secrets

import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.forwarding import Credentials

MIN_KEY_CHARS = 32
_INFO = b"backchannel destination credentials v1"
_decode = msgspec.json.Decoder(Credentials).decode
_encode = msgspec.json.Encoder().encode


class CredentialsError(Exception):
    """A key is unusable or a sealed value does not open; the message never holds key or credential material."""


def generate_key() -> str:
    """A fresh value for BACKCHANNEL_ENCRYPTION_KEY (43 url-safe characters, 256 random bits)."""
    return secrets.token_urlsafe(32)


def _fernet(key: str) -> Fernet:
    if len(key) < MIN_KEY_CHARS:
        raise CredentialsError(f"BACKCHANNEL_ENCRYPTION_KEY: each key needs at least {MIN_KEY_CHARS} characters "
                               "(make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


class Vault:
    """Seals and opens destination credentials. Its repr shows no key."""

    def __init__(self, setting: str) -> None:
        keys = [k.strip() for k in setting.split(",") if k.strip()]
        if not keys:
            raise CredentialsError("BACKCHANNEL_ENCRYPTION_KEY is not set: destinations need it to keep credentials")
        self._fernet = MultiFernet([_fernet(k) for k in keys])

    def seal(self, credentials: Credentials) -> bytes:
        return self._fernet.encrypt(_encode(credentials))

    def open(self, sealed: bytes) -> Credentials:
        try:
            return _decode(self._fernet.decrypt(sealed))
        except InvalidToken:
            raise CredentialsError("sealed credentials do not open with any configured key") from None

    def reseal(self, sealed: bytes) -> bytes:
        """The same credentials under the first (newest) key."""
        try:
            return self._fernet.rotate(sealed)
        except InvalidToken:
            raise CredentialsError("sealed credentials do not open with any configured key") from None

    def __repr__(self) -> str:
        return "Vault(***)"
