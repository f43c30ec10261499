"""The fake Salesforce's HTTP API (ASGI): the token endpoint and the REST resources for Leads.

It follows the documentation, not our client:
- Records, `sobjects/Lead` POST (201 `{"id","success","errors"}`), GET, PATCH (204), and errors as a
  JSON array of `{message, errorCode, fields}` (REST API Developer Guide, "Working with Records",
  https://developer.salesforce.com/docs/platform/api-rest/guide/using-resources-working-with-records.html,
  and "Status Codes and Error Responses",
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm).
- `composite/sobjects` PATCH updates up to 200 records in order, each on its own unless `allOrNone` (which
  the fake refuses), and answers 200 with a SaveResult `{id, success, errors}` per record, errors as
  `{statusCode, message, fields}` ("Update Records Using sObject Collections", REST API Developer Guide).
- `query?q=` answers `totalSize`, `done`, `records` with `attributes`; the statement is read by
  `salesforce_query.py`. Text comparison is case-insensitive, as in SOQL.
- Limits: every REST response carries `Sforce-Limit-Info: api-usage=N/LIMIT` ("Limit Info Header",
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm);
  `GET limits` answers `{"DailyApiRequests": {"Max", "Remaining"}}`, the one entry of the real resource
  we read.
"""

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from onefunnel.simulators.salesforce_errors import ApiError
from onefunnel.simulators.salesforce_fields import Record
from onefunnel.simulators.salesforce_gate import Gate
from onefunnel.simulators.salesforce_org import Org
from onefunnel.simulators.salesforce_outbound import Value
from onefunnel.simulators.salesforce_query import soql_lead_query

COLLECTION_LIMIT = 200  # records per sObject Collections request


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    status: int


class Instance(Protocol):
    """What the routes need of the `FakeSalesforce`; latency is read per call, tests may change it."""

    latency: float
    calls: list[Call]
    org: Org
    gate: Gate


def build_app(fake: Instance) -> FastAPI:
    """The routes of `fake`, behind its gate; every call is recorded in `fake.calls`."""
    app = FastAPI(title="fake Salesforce")
    data = "/services/data/{version}"
    org, gate = fake.org, fake.gate

    @app.middleware("http")
    async def refuse(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if fake.latency:
            await asyncio.sleep(fake.latency)
        if request.url.path.startswith("/services/data/"):
            refusal = gate.refusal(request)
            response = refusal.response() if refusal else await call_next(request)
            response.headers["Sforce-Limit-Info"] = f"api-usage={gate.api_usage}/{gate.api_limit}"
        else:
            response = await call_next(request)
        fake.calls.append(Call(request.method, request.url.path, response.status_code))
        return response

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(HTTPException)
    async def not_found(_: Request, error: HTTPException) -> JSONResponse:
        code = "METHOD_NOT_ALLOWED" if error.status_code == 405 else "NOT_FOUND"
        return ApiError(error.status_code, code, "The requested resource does not exist").response()

    @app.post("/services/oauth2/token")
    async def token(request: Request) -> JSONResponse:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        return gate.issue_token(form, str(request.base_url).rstrip("/"))

    @app.get(data + "/limits")
    async def limits(version: str) -> dict[str, object]:
        _version(version)
        return {"DailyApiRequests": {"Max": gate.api_limit, "Remaining": gate.api_limit - gate.api_usage}}

    @app.get(data + "/query")
    async def query(version: str, request: Request) -> dict[str, object]:
        _version(version)
        fields, emails, limit = soql_lead_query(request.query_params.get("q", ""))
        wanted = {email.lower() for email in emails}
        # Records are kept in creation order, which is ORDER BY CreatedDate ASC.
        leads = [r for r in org.records["Lead"].values() if str(r["Email"] or "").lower() in wanted]
        records = [
            {"attributes": {"type": "Lead", "url": f"/services/data/{version}/sobjects/Lead/{lead['Id']}"}}
            | {name: _json_value(lead[name]) for name in fields}
            for lead in leads[:limit]
        ]
        return {"totalSize": len(records), "done": True, "records": records}

    @app.post(data + "/sobjects/Lead", status_code=201)
    async def create(version: str, request: Request) -> dict[str, object]:
        _version(version)
        lead_id = org.create_lead(await _fields(request), actor=org.integration_user_id)
        return {"id": lead_id, "success": True, "errors": []}

    @app.get(data + "/sobjects/{kind}/{record_id}")
    async def read(version: str, kind: str, record_id: str) -> dict[str, object]:
        _version(version)
        if kind not in ("Lead", "Opportunity"):
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        record = org.get_record(kind, record_id)
        url = f"/services/data/{version}/sobjects/{kind}/{record['Id']}"
        return {"attributes": {"type": kind, "url": url}} | {k: _json_value(v) for k, v in record.items()}

    @app.delete(data + "/sobjects/Lead/{record_id}", status_code=204)
    async def delete(version: str, record_id: str) -> Response:
        _version(version)
        org.get_record("Lead", record_id)  # 404 NOT_FOUND when it is not there
        del org.records["Lead"][record_id]  # to the Recycle Bin; no Outbound Message for a delete
        return Response(status_code=204)

    @app.patch(data + "/composite/sobjects")
    async def update_collection(version: str, request: Request) -> list[dict[str, object]]:
        """Update up to 200 leads in order, each on its own (allOrNone false): a SaveResult each."""
        _version(version)
        body = await _fields(request)
        records = body.get("records")
        # Salesforce documents a 400 for a malformed request; the error codes below are the fake's choice.
        if body.get("allOrNone") or not isinstance(records, list) or not 0 < len(records) <= COLLECTION_LIMIT:
            raise ApiError(400, "INVALID_FIELD", f"records must hold 1 to {COLLECTION_LIMIT} sObjects")
        results: list[dict[str, object]] = []
        for record in records:
            fields = dict(record) if isinstance(record, dict) else {}
            kind = (fields.pop("attributes", None) or {}).get("type")
            record_id = fields.pop("id", None)
            if kind != "Lead" or not isinstance(record_id, str):
                raise ApiError(400, "INVALID_TYPE", "each record needs attributes.type Lead and an id")
            try:
                org.update_lead(record_id, fields, actor=org.integration_user_id)
            except ApiError as error:
                refusal = {"statusCode": error.code, "message": error.message, "fields": list(error.fields)}
                results.append({"id": record_id, "success": False, "errors": [refusal]})
                continue
            results.append({"id": record_id, "success": True, "errors": []})
        return results

    @app.patch(data + "/sobjects/Lead/{record_id}", status_code=204)
    async def update(version: str, record_id: str, request: Request) -> Response:
        _version(version)
        org.update_lead(record_id, await _fields(request), actor=org.integration_user_id)
        return Response(status_code=204)

    return app


def _version(version: str) -> None:
    if not re.fullmatch(r"v\d{2}\.0", version):
        raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")


async def _fields(request: Request) -> Record:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "JSON_PARSER_ERROR", "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object of fields")
    return dict(body)


def _json_value(value: Value) -> str | bool | None:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"
    return value
