"""gateway/forwarding/crypto.py: destination credentials sealed at rest, opened only with the configured key."""

from __future__ import annotations

import logging

import pytest

from gateway.forwarding import LangfuseKeys, PostHogKey, WebhookSecret
from gateway.forwarding.crypto import CredentialsError, Vault, generate_key

KEY = generate_key()
CREDENTIALS = [LangfuseKeys("pk-lf-1", "sk-lf-very-secret"), PostHogKey("phc_very_secret"),
               WebhookSecret("whsec_dmVyeSBzZWNyZXQgYnl0ZXMgaGVyZQ==")]


@pytest.mark.parametrize("credentials", CREDENTIALS, ids=lambda c: type(c).__name__)
def test_sealed_credentials_open_to_the_same_value_and_hide_it(credentials):
    vault = Vault(KEY)
    sealed = vault.seal(credentials)
    assert vault.open(sealed) == credentials and type(vault.open(sealed)) is type(credentials)
    assert not any(getattr(credentials, f).encode() in sealed for f in credentials.__struct_fields__)
    assert vault.seal(credentials) != sealed  # a fresh IV each time: equal credentials do not look equal at rest


def test_credentials_and_vaults_never_show_secrets(caplog):
    keys = CREDENTIALS[0]
    with caplog.at_level(logging.INFO):
        logging.getLogger("backchannel").info("destination %s with %r via %r", keys, keys, Vault(KEY))
    for text in (repr(keys), str(keys), f"{keys}", caplog.text, repr(Vault(KEY))):
        assert "sk-lf-very-secret" not in text and KEY not in text


def test_another_key_cannot_open_and_the_error_names_no_secret():
    sealed = Vault(KEY).seal(CREDENTIALS[1])
    with pytest.raises(CredentialsError) as refused:
        Vault(generate_key()).open(sealed)
    assert "phc_very_secret" not in str(refused.value) and KEY not in str(refused.value)
    with pytest.raises(CredentialsError):
        Vault(KEY).open(sealed[:-4] + b"AAAA")  # tampered


def test_rotation_new_key_first_old_keys_still_open():
    old, new = generate_key(), generate_key()
    sealed_old = Vault(old).seal(CREDENTIALS[0])
    rotating = Vault(f"{new}, {old}")
    assert rotating.open(sealed_old) == CREDENTIALS[0]
    resealed = rotating.reseal(sealed_old)
    assert Vault(new).open(resealed) == CREDENTIALS[0]
    with pytest.raises(CredentialsError):
        Vault(old).open(resealed)


@pytest.mark.parametrize("setting", ["", " , ", "too-short", "x" * 31])
def test_missing_or_weak_keys_are_refused(setting):
    with pytest.raises(CredentialsError, match="BACKCHANNEL_ENCRYPTION_KEY"):
        Vault(setting)


def test_generated_keys_are_long_and_distinct():
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100 and all(len(k) == 43 for k in keys)
