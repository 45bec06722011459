"""Browser sessions for the pages: a key pasted once becomes a signed, HttpOnly cookie.

The cookie holds the key's SHA-256 digest (what the key store keeps anyway), never the key,
and a random CSRF token; itsdangerous signs it with a secret kept in the key store's
database, so every instance of the read API accepts the cookies of the others and a restart
signs nobody out. Each request looks the digest up again, so a key revoked, expired or
deleted from the store ends its sessions at once; deleting the secret's row ends every
session.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request, Response
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import Column, DateTime, Engine, LargeBinary, MetaData, String, Table, select
from sqlalchemy.exc import IntegrityError

from services.shared.api_keys import ApiKeyStore, Principal, digest

SESSION_COOKIE = "dealreg_session"
SIGN_IN_COOKIE = "dealreg_sign_in"
SESSION_SECONDS = 8 * 3600
SIGN_IN_SECONDS = 3600
SECRET_NAME = "pages_session"

secret_tables = MetaData()
page_secrets = Table(
    "dealreg_page_secrets",
    secret_tables,
    Column("name", String(50), primary_key=True),
    Column("secret", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def shared_secret(engine: Engine) -> bytes:
    """The signing secret stored beside the API keys; made once, by whichever instance
    asks first (a racing second instance reads the winner's)."""
    secret_tables.create_all(engine)
    query = select(page_secrets.c.secret).where(page_secrets.c.name == SECRET_NAME)
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    if found is not None:
        return bytes(found)
    try:
        with engine.begin() as conn:
            conn.execute(page_secrets.insert().values(
                name=SECRET_NAME, secret=secrets.token_bytes(32), created_at=datetime.now(UTC)))
    except IntegrityError:
        pass
    with engine.connect() as conn:
        return bytes(conn.execute(query).scalar_one())


@dataclass(frozen=True)
class Session:
    """A signed-in browser: whose key, and the token its forms must send back."""

    principal: Principal
    csrf: str


class SessionKeeper:
    """Signs, reads and ends the session cookies of one app."""

    def __init__(self, keys: ApiKeyStore, secret: bytes, secure: bool = False) -> None:
        self.keys = keys
        self.secure = secure
        self._sessions = URLSafeTimedSerializer(secret, salt="dealreg.pages.session")
        self._sign_ins = URLSafeTimedSerializer(secret, salt="dealreg.pages.sign-in")

    # -- signing in --------------------------------------------------------------------

    def sign_in_token(self, request: Request) -> str:
        """The CSRF token of the sign-in form: the browser's own if it has one."""
        return self._sign_in_token_of(request) or secrets.token_urlsafe(24)

    def bind_sign_in_token(self, response: Response, token: str) -> None:
        """Bind the sign-in form's token to this browser by a short cookie, so a foreign page
        cannot sign a visitor in with the attacker's key."""
        response.set_cookie(SIGN_IN_COOKIE, self._sign_ins.dumps(token), max_age=SIGN_IN_SECONDS,
                            httponly=True, samesite="strict", secure=self.secure, path="/")

    def sign_in_token_matches(self, request: Request, sent: str) -> bool:
        expected = self._sign_in_token_of(request)
        return expected is not None and hmac.compare_digest(expected, sent)

    def _sign_in_token_of(self, request: Request) -> str | None:
        raw = request.cookies.get(SIGN_IN_COOKIE)
        if raw is None:
            return None
        try:
            token = self._sign_ins.loads(raw, max_age=SIGN_IN_SECONDS)
        except BadData:
            return None
        return token if isinstance(token, str) else None

    def start(self, key: str, response: Response) -> Principal | None:
        """Set the session cookie for a known key; None (and no cookie) for an unknown one."""
        principal = self.principal_of_digest(digest(key.strip()))
        if principal is None:
            return None
        value = self._sessions.dumps({"key": digest(key.strip()),
                                      "csrf": secrets.token_urlsafe(24)})
        response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_SECONDS, httponly=True,
                            samesite="lax", secure=self.secure, path="/")
        response.delete_cookie(SIGN_IN_COOKIE, path="/")
        return principal

    def end(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                               secure=self.secure)

    # -- each request ------------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        """The request's session: a cookie signed by us, not expired, whose key the store
        still holds. A tampered, expired or revoked one is None."""
        raw = request.cookies.get(SESSION_COOKIE)
        if raw is None:
            return None
        try:
            content = self._sessions.loads(raw, max_age=SESSION_SECONDS)
        except BadData:
            return None
        if not isinstance(content, dict) or not isinstance(content.get("key"), str) \
                or not isinstance(content.get("csrf"), str):
            return None
        principal = self.principal_of_digest(content["key"])
        return None if principal is None else Session(principal, content["csrf"])

    def principal_of_request(self, request: Request) -> Principal | None:
        session = self.session_of(request)
        return None if session is None else session.principal

    def principal_of_digest(self, key_digest: str) -> Principal | None:
        """Looked up on every call, not remembered as ApiKeyStore.resolve does: a page view
        is rare next to API calls, and a revoked, expired or deleted key must end its
        sessions at once."""
        return self.keys.current_principal(key_digest)


def csrf_matches(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.csrf, sent)
