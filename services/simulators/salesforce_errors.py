"""The fake Salesforce's refusals, in the shape of the REST API's error responses.

Errors are a JSON array of `{message, errorCode, fields}` (REST API Developer Guide, "Status Codes and
Error Responses", https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm).
"""

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """A refusal in Salesforce's own shape; the `user_*` actions raise it too."""

    def __init__(self, status: int, code: str, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message, self.fields = status, code, message, fields

    def response(self) -> JSONResponse:
        body = [{"message": self.message, "errorCode": self.code, "fields": list(self.fields)}]
        return JSONResponse(body, status_code=self.status)
