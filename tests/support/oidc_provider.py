"""A real OpenID Connect provider for the sign-in tests: the npm package `oidc-provider` run by
Node from tests/support/oidc/server.mjs on 127.0.0.1 (`python3 dev.py test` runs `npm ci` there
when node_modules is missing).

The test owns the provider's signing key (so it can also sign tokens the provider never would:
expired, for another audience) and its users, whose groups it may change between sign-ins."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

HERE = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "allotment"
CLIENT_SECRET = "allotment-test-secret"
KID = "allotment-test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_private_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_jwk(key, kid: str = KID) -> dict:
    jwk = json.loads(RSAAlgorithm.to_jwk(key))
    # PyJWT marks a private JWK `key_ops: ["sign"]`; the provider also verifies with it (the
    # id_token_hint at sign-out), so the key may do both.
    jwk.pop("key_ops", None)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


@dataclass
class OidcProvider:
    workdir: Path
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    users: dict = field(default_factory=dict)
    port: int = field(default_factory=_free_port)
    key: object = field(default_factory=new_private_key)
    process: subprocess.Popen | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_user(self, username: str, *, password: str = "idp-pass", groups=(), email=None):
        self.users[username] = {
            "sub": f"sub-{username}",
            "username": username,
            "password": password,
            "email": email or f"{username}@lab.example",
            "groups": list(groups),
        }
        self._write_users()

    def set_groups(self, username: str, groups) -> None:
        self.users[username]["groups"] = list(groups)
        self._write_users()

    def _write_users(self) -> None:
        path = self.workdir / "users.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.users))
        tmp.replace(path)  # the provider never reads half a file

    def start(self) -> OidcProvider:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("the OIDC tests need Node.js 20 or newer (`node` on PATH)")
        if not (HERE / "node_modules" / "oidc-provider").exists():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)
        self._write_users()
        config = {
            "port": self.port,
            "issuer": self.issuer,
            "users_file": str(self.workdir / "users.json"),
            "jwks": {"keys": [private_jwk(self.key)]},
            "clients": [
                {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "redirect_uris": self.redirect_uris,
                    "post_logout_redirect_uris": self.post_logout_redirect_uris,
                    "grant_types": ["authorization_code"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "client_secret_post",
                }
            ],
        }
        config_path = self.workdir / "provider.json"
        config_path.write_text(json.dumps(config))
        log = (self.workdir / "provider.log").open("w")
        self.process = subprocess.Popen(
            [node, str(HERE / "server.mjs"), str(config_path)],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        deadline = time.monotonic() + 30
        line = self.process.stdout.readline()
        if not line.startswith("READY") or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(
                f"the OIDC provider did not start: {line!r}\n"
                + (self.workdir / "provider.log").read_text()
            )
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def sign(self, claims: dict, *, key=None, kid: str = KID) -> str:
        """An RS256 JWT with the provider's key (or another one, for a forgery)."""
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": kid})
