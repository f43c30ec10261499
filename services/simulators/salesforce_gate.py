"""What the fake Salesforce checks before a REST call reaches a record: sessions, injected faults, limits.

- OAuth 2.0 client credentials flow, `POST /services/oauth2/token` with a form body
  (Help, "OAuth 2.0 Client Credentials Flow for Server-to-Server Integration",
  https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm):
  `access_token`, `signature` (base64 HMAC-SHA256 of `id + issued_at` keyed by the client secret),
  `scope`, `instance_url`, `id`, `token_type`, `issued_at` (ms); wrong credentials are 400
  `invalid_client`. A session expires (default 2 hours, Security Controls) and is then 401
  `INVALID_SESSION_ID`, "Session expired or invalid".
- Limits: past the org's allocation a call is 403 `REQUEST_LIMIT_EXCEEDED` "TotalRequests Limit exceeded."
  ("API Request Limits and Allocations").
"""

import base64
import hashlib
import hmac
import secrets
import time

from fastapi import Request
from fastapi.responses import JSONResponse

from onefunnel.simulators.salesforce_errors import ApiError


class Gate:
    """The connected app's credentials, the live sessions, the faults a test injected, the API usage."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        organization_id: str,
        instance_url: str,
        integration_user_id: str,
        api_limit: int,
        token_ttl: float,
    ) -> None:
        self.api_limit, self.api_usage, self.token_ttl = api_limit, 0, token_ttl
        self.injected_errors: list[int] = []
        self.limit_storm = 0
        self._client_id, self._client_secret = client_id, client_secret
        self._organization_id, self._instance_url = organization_id, instance_url
        self._integration_user_id = integration_user_id
        self._tokens: dict[str, float] = {}

    def expire_tokens(self) -> None:
        """End every session."""
        self._tokens = dict.fromkeys(self._tokens, 0.0)

    def issue_token(self, form: dict[str, str], login_url: str) -> JSONResponse:
        """Answer a token request of the client credentials flow."""
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "grant type not supported"}, 400
            )
        good_id = hmac.compare_digest(form.get("client_id", "").encode(), self._client_id.encode())
        good_secret = hmac.compare_digest(
            form.get("client_secret", "").encode(), self._client_secret.encode()
        )
        if not (good_id and good_secret):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "invalid client credentials"}, 400
            )
        token = f"{self._organization_id[:15]}!{secrets.token_urlsafe(48)}"
        self._tokens[token] = time.monotonic() + self.token_ttl
        identity = f"{login_url}/id/{self._organization_id}/{self._integration_user_id}"
        issued_at = str(int(time.time() * 1000))
        mac = hmac.new(self._client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        return JSONResponse(
            {
                "access_token": token,
                "signature": base64.b64encode(mac).decode(),
                "scope": "api",
                "instance_url": self._instance_url,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
            }
        )

    def refusal(self, request: Request) -> ApiError | None:
        """Refuse a REST call the way Salesforce would before it reaches the record, or count it."""
        if self.injected_errors:
            status = self.injected_errors.pop(0)
            code = "SERVER_UNAVAILABLE" if status == 503 else "UNKNOWN_EXCEPTION"
            return ApiError(
                status,
                code,
                "An unexpected error occurred. Please include this ErrorId if you contact support.",
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or self._tokens.get(token, 0.0) < time.monotonic():
            return ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if self.limit_storm or self.api_usage >= self.api_limit:
            self.limit_storm = max(self.limit_storm - 1, 0)
            return ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        self.api_usage += 1
        return None
