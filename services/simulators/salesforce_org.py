"""The fake Salesforce org's records (Leads, their conversions, Opportunities) and its write rules.

Records as in the REST API Developer Guide, "Working with Records"
(https://developer.salesforce.com/docs/platform/api-rest/guide/using-resources-working-with-records.html).
`LastName` and `Company` are required on create (`REQUIRED_FIELD_MISSING`); a converted lead is read-only
(`CANNOT_UPDATE_CONVERTED_LEAD`, "cannot reference converted lead", Help article 000384333). Field and
picklist rules are in `salesforce_fields.py`.

Every change sends an Outbound Message (`salesforce_outbound.py`). `LastModifiedById` is the integration
user for API writes and a person for the `user_*` actions, so sync can recognise echoes of its own writes
in the Outbound Messages.
"""

import itertools
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from onefunnel.simulators.salesforce_errors import ApiError
from onefunnel.simulators.salesforce_fields import (
    CONVERTED_STATUS,
    LEAD_STATUSES,
    OPPORTUNITY_STAGES,
    Record,
    check_fields,
    check_status,
)
from onefunnel.simulators.salesforce_outbound import OutboundSender


@dataclass(frozen=True)
class Conversion:
    account_id: str
    contact_id: str
    opportunity_id: str


class Org:
    """The records by object type and id, changed only through Salesforce's rules."""

    def __init__(self, *, outbound: OutboundSender, read_at_send: bool, seed: int | None) -> None:
        self.records: dict[str, dict[str, Record]] = {
            "Lead": {},
            "Contact": {},
            "Opportunity": {},
            "Account": {},
        }
        self.read_at_send = read_at_send
        self._outbound = outbound
        self._counter = itertools.count(random.Random(seed).randrange(10**6))
        self._last_modified = datetime.now(UTC)
        self.integration_user_id = self.new_id("005")
        self.human_user_id = self.new_id("005")
        self._actions = {"Lead": self.new_id("04k"), "Opportunity": self.new_id("04k")}

    def create_lead(self, fields: Record, *, actor: str) -> str:
        """Insert a lead as `actor`; returns its id."""
        check_fields(fields)
        missing = tuple(name for name in ("LastName", "Company") if not fields.get(name))
        if missing:
            raise ApiError(
                400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing
            )
        fields.setdefault("Status", LEAD_STATUSES[0])  # the picklist's default value
        check_status(fields)
        defaults: Record = dict.fromkeys(("FirstName", "Email", "LeadSource", "ConvertedAccountId"))
        lead: Record = {
            **defaults,
            "OwnerId": actor,
            "IsConverted": False,
            "ConvertedContactId": None,
            "ConvertedOpportunityId": None,
            **fields,
        }
        lead_id = self._insert("Lead", lead, actor, self._now())
        self._touch("Lead", self.records["Lead"][lead_id], actor, None)
        return lead_id

    def update_lead(self, lead_id: str, fields: Record, *, actor: str) -> None:
        """Change a lead's fields as `actor`."""
        lead = self.get_record("Lead", lead_id)
        if lead["IsConverted"]:
            raise ApiError(400, "CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")
        check_fields(fields)
        check_status(fields)
        lead.update(fields)
        # A workflow rule "created, and every time it's edited" fires even when nothing changed.
        self._touch("Lead", lead, actor, self._now())

    def convert_lead(self, lead_id: str, *, actor: str) -> Conversion:
        """Convert a lead: account, contact and an opportunity at Prospecting."""
        lead = self.get_record("Lead", lead_id)
        now = self._now()
        account_id, contact_id = (
            self._insert("Account", {}, actor, now),
            self._insert("Contact", {}, actor, now),
        )
        opportunity: Record = {"StageName": "Prospecting", "IsClosed": False, "IsWon": False}
        opportunity_id = self._insert("Opportunity", opportunity, actor, now)
        lead.update(
            IsConverted=True,
            Status=CONVERTED_STATUS,
            ConvertedAccountId=account_id,
            ConvertedContactId=contact_id,
            ConvertedOpportunityId=opportunity_id,
        )
        self._touch("Lead", lead, actor, now)
        self._touch("Opportunity", self.records["Opportunity"][opportunity_id], actor, now)
        return Conversion(account_id, contact_id, opportunity_id)

    def set_opportunity_stage(self, opportunity_id: str, stage: str, *, actor: str) -> None:
        """Move an opportunity to `stage`, closing (and winning) it with a Closed stage."""
        if stage not in OPPORTUNITY_STAGES:
            raise ApiError(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"bad value for restricted picklist field: {stage}",
                ("StageName",),
            )
        opportunity = self.get_record("Opportunity", opportunity_id)
        closed = stage.startswith("Closed ")
        opportunity.update(StageName=stage, IsClosed=closed, IsWon=stage == "Closed Won")
        self._touch("Opportunity", opportunity, actor, self._now())

    def get_record(self, kind: str, record_id: str) -> Record:
        """The record of this type by its id, or 404 NOT_FOUND."""
        # A 15-character id names the same record as its 18-character form.
        for known_id, record in self.records[kind].items():
            if len(record_id) in (15, 18) and known_id[:15] == record_id[:15]:
                return record
        raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")

    def new_id(self, prefix: str) -> str:
        """An 18-character Salesforce id: key prefix, pod, counter, and the case-encoding suffix."""
        number, digits = next(self._counter), ""
        for _ in range(10):
            number, digit = divmod(number, 62)
            digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[digit] + digits
        short = f"{prefix}5g{digits}"
        suffix = ""
        for chunk in (short[0:5], short[5:10], short[10:15]):
            bits = sum(1 << i for i, char in enumerate(chunk) if "A" <= char <= "Z")
            suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
        return short + suffix

    def _insert(self, kind: str, record: Record, actor: str, now: datetime) -> str:
        record_id = self.new_id(
            {"Lead": "00Q", "Contact": "003", "Opportunity": "006", "Account": "001"}[kind]
        )
        record.update(Id=record_id, CreatedDate=now, LastModifiedDate=now, SystemModstamp=now)
        record["LastModifiedById"] = actor
        self.records[kind][record_id] = record
        return record_id

    def _touch(self, kind: str, record: Record, actor: str, now: datetime | None) -> None:
        if now is not None:
            record.update(LastModifiedDate=now, SystemModstamp=now, LastModifiedById=actor)
        record_id, records = str(record["Id"]), self.records[kind]
        copy = None if self.read_at_send else dict(record)

        def read() -> Record | None:
            return records.get(record_id) if copy is None else copy

        self._outbound.send(
            notification_id=self.new_id("04l"), action_id=self._actions[kind], object_type=kind, read=read
        )

    def _now(self) -> datetime:
        # Strictly increasing at millisecond precision, so LastModifiedDate orders changes.
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        self._last_modified = max(now, self._last_modified + timedelta(milliseconds=1))
        return self._last_modified
