"""Access keys Dockyard issues, and the admin key pair written for the AWS CLI at first start.

Keys live in the store (``/iam/access-keys/<id>``) so every server replica knows them; each server
keeps an in-memory copy for the signature check on the hot path and re-reads the store on a miss.
"""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

import orjson

from dockyard.services import keys
from dockyard.services.context import Principal
from dockyard.store.base import Compare, Conflict, Put, StateStore

PROFILE = "dockyard"
_ALNUM = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class IssuedKey:
    access_key_id: str
    secret_access_key: str
    principal: Principal


def new_access_key_id(prefix: str = "AKID") -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(16))


def new_secret() -> str:
    return secrets.token_urlsafe(30)[:40]


def _decode(access_key_id: str, raw: bytes) -> IssuedKey:
    doc = orjson.loads(raw)
    return IssuedKey(
        access_key_id=access_key_id,
        secret_access_key=doc["secretAccessKey"],
        principal=Principal(
            kind=doc["principal"]["kind"],
            access_key_id=access_key_id,
            instance_arn=doc["principal"].get("instanceArn"),
        ),
    )


class KeyRing:
    """Looks up the secret and principal of an access key id."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._keys: dict[str, IssuedKey] = {}

    def cached(self, access_key_id: str) -> IssuedKey | None:
        return self._keys.get(access_key_id)

    async def lookup(self, access_key_id: str) -> IssuedKey | None:
        hit = self._keys.get(access_key_id)
        if hit is not None:
            return hit
        if len(access_key_id) > 128:
            return None
        kv = await self._store.get(keys.access_key(access_key_id))
        if kv is None:
            return None
        issued = _decode(access_key_id, kv.value)
        self._keys[access_key_id] = issued
        return issued

    async def issue(self, principal_kind: str, instance_arn: str | None = None) -> IssuedKey:
        key_id = new_access_key_id()
        return await self.put(key_id, new_secret(), principal_kind, instance_arn)

    async def put(
        self, access_key_id: str, secret: str, principal_kind: str, instance_arn: str | None = None
    ) -> IssuedKey:
        principal: dict[str, str] = {"kind": principal_kind}
        if instance_arn:
            principal["instanceArn"] = instance_arn
        doc = {"secretAccessKey": secret, "principal": principal}
        key = keys.access_key(access_key_id)
        await self._store.txn([Compare.absent(key)], [Put(key, orjson.dumps(doc))])
        issued = IssuedKey(access_key_id, secret, Principal(principal_kind, access_key_id, instance_arn))
        self._keys[access_key_id] = issued
        return issued

    async def bootstrap_admin(self, key_id: str | None, secret: str | None) -> IssuedKey:
        """The admin key: from the given pair (environment) or the store, else a new one."""
        if key_id and secret:
            existing = await self.lookup(key_id)
            if existing is not None:
                if existing.secret_access_key != secret or existing.principal.kind != "admin":
                    raise SystemExit(f"access key {key_id} already exists with another secret or role")
                return existing
            try:
                return await self.put(key_id, secret, "admin")
            except Conflict:
                found = await self.lookup(key_id)
                assert found is not None
                return found
        page = await self._store.list(keys.ACCESS_KEYS_PREFIX)
        for kv in page.kvs:
            issued = _decode(kv.key[len(keys.ACCESS_KEYS_PREFIX) :], kv.value)
            if issued.principal.kind == "admin":
                self._keys[issued.access_key_id] = issued
                return issued
        return await self.put(new_access_key_id("AKIA"), new_secret(), "admin")


def write_cli_files(state_dir: Path, admin: IssuedKey, region: str) -> None:
    """DIR/credentials and DIR/config for ``aws --profile dockyard`` (mode 0600)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    creds = (
        f"[{PROFILE}]\n"
        f"aws_access_key_id = {admin.access_key_id}\n"
        f"aws_secret_access_key = {admin.secret_access_key}\n"
        f"region = {region}\n"
    )
    config = f"[profile {PROFILE}]\nregion = {region}\noutput = json\n"
    for name, text in (("credentials", creds), ("config", config)):
        path = state_dir / name
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
