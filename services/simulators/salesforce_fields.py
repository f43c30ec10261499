"""Which Lead fields the fake Salesforce accepts on a write, and which values.

`Status` takes the default LeadStatus values only (`INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`); the
converted status is set by conversion only, never by a write. Which code Salesforce gives for that last
one we could not find documented; the fake answers `FIELD_INTEGRITY_EXCEPTION` (unverified). Errors follow
"Status Codes and Error Responses"
(https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm).
"""

from onefunnel.simulators.salesforce_errors import ApiError
from onefunnel.simulators.salesforce_outbound import Value

LEAD_STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
)
CONVERTED_STATUS = "Closed - Converted"
OPPORTUNITY_STAGES = (
    "Prospecting", "Qualification", "Needs Analysis", "Value Proposition", "Id. Decision Makers",
    "Perception Analysis", "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost",
)  # fmt: skip
WRITABLE = frozenset({"FirstName", "LastName", "Company", "Email", "Status", "LeadSource", "OwnerId"})
READ_ONLY = frozenset({
    "Id", "IsConverted", "ConvertedAccountId", "ConvertedContactId", "ConvertedOpportunityId",
    "CreatedDate", "LastModifiedDate", "LastModifiedById", "SystemModstamp",
})  # fmt: skip
Record = dict[str, Value]


def check_fields(fields: Record) -> None:
    """Refuse unknown and read-only fields, and values that are not strings or null."""
    unknown = [name for name in fields if name not in WRITABLE | READ_ONLY]
    if unknown:
        raise ApiError(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type Lead")
    read_only = tuple(name for name in fields if name in READ_ONLY)
    if read_only:
        raise ApiError(
            400,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            f"Unable to create/update fields: {', '.join(read_only)}.",
            read_only,
        )
    if not all(value is None or isinstance(value, str) for value in fields.values()):
        raise ApiError(400, "JSON_PARSER_ERROR", "Lead fields take strings or null")


def check_status(fields: Record) -> None:
    """Refuse a `Status` outside the picklist, and the converted one."""
    if "Status" not in fields:
        return
    status = fields["Status"]
    if status not in LEAD_STATUSES:
        raise ApiError(
            400,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"bad value for restricted picklist field: {status}",
            ("Status",),
        )
    if status == CONVERTED_STATUS:
        raise ApiError(
            400, "FIELD_INTEGRITY_EXCEPTION", "A converted status is set by converting the lead", ("Status",)
        )
