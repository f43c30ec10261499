"""A stateful fake of the Salesforce REST API for Leads, sending Outbound Messages on every change.

Serves `fake.app` (ASGI), following the REST API Developer Guide ("Working with Records",
https://developer.salesforce.com/docs/platform/api-rest/guide/using-resources-working-with-records.html)
and not our client. One org, in parts that each cite the documentation they follow:
- `salesforce_org.py`: the records and the write rules; `salesforce_fields.py`: the Lead fields and picklists.
- `salesforce_api.py`: the HTTP routes; `salesforce_query.py`: the one SOQL statement understood.
- `salesforce_gate.py`: OAuth sessions, injected faults and the API limit; `salesforce_errors.py`: errors.
- `salesforce_outbound.py`: the Outbound Messages.
"""

import random

import httpx

from onefunnel.simulators.salesforce_api import Call, build_app
from onefunnel.simulators.salesforce_fields import Record
from onefunnel.simulators.salesforce_gate import Gate
from onefunnel.simulators.salesforce_org import Conversion, Org
from onefunnel.simulators.salesforce_outbound import Delivery, OutboundSender

__all__ = ["FakeSalesforce"]


class FakeSalesforce:
    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",  # noqa: S107 (a fake's well-known credentials)
        organization_id: str = "00D000000000062EAA",
        instance_url: str = "https://fake.my.salesforce.com",
        api_version: str = "62.0",
        api_limit: int = 15000,  # a Developer Edition org's daily allocation
        token_ttl: float = 7200.0,
        latency: float = 0.0,
        webhook_url: str | None = None,
        webhook_client: httpx.AsyncClient | None = None,
        webhook_attempts: int = 4,
        webhook_retry_delay: float = 0.01,
        shuffle_webhooks: bool = False,
        read_at_send: bool = True,
        seed: int | None = None,
    ) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.organization_id, self.instance_url = organization_id, instance_url
        self.latency = latency
        self.calls: list[Call] = []
        self._outbound = OutboundSender(
            url=webhook_url,
            client=webhook_client,
            organization_id=organization_id,
            instance_url=instance_url,
            api_version=api_version,
            attempts=webhook_attempts,
            retry_delay=webhook_retry_delay,
            shuffle_window=0.05 if shuffle_webhooks else 0.0,
            rng=random.Random(seed),
        )
        self.org = Org(outbound=self._outbound, read_at_send=read_at_send, seed=seed)
        self.integration_user_id, self.human_user_id = self.org.integration_user_id, self.org.human_user_id
        self.gate = Gate(
            client_id=client_id,
            client_secret=client_secret,
            organization_id=organization_id,
            instance_url=instance_url,
            integration_user_id=self.integration_user_id,
            api_limit=api_limit,
            token_ttl=token_ttl,
        )
        self.app = build_app(self)

    # --- test controls -------------------------------------------------------------------------

    def inject_errors(self, status: int, count: int) -> None:
        """Answer the next `count` REST calls with a transient server error."""
        self.gate.injected_errors.extend([status] * count)

    def inject_rate_limit(self, count: int) -> None:
        """Answer the next `count` REST calls 403 REQUEST_LIMIT_EXCEEDED (Salesforce sends no Retry-After)."""
        self.gate.limit_storm += count

    def expire_tokens(self) -> None:
        """End every session, as an admin's "revoke" or the session timeout would."""
        self.gate.expire_tokens()

    @property
    def deliveries(self) -> list[Delivery]:
        return self._outbound.deliveries

    async def webhooks_idle(self) -> None:
        """Wait until every Outbound Message was acknowledged or given up on."""
        await self._outbound.idle()

    async def aclose(self) -> None:
        await self._outbound.aclose()

    def snapshot(self) -> dict[str, dict[str, Record]]:
        """A copy of every record by object type and id, for assertions."""
        return {
            kind: {rid: dict(r) for rid, r in records.items()} for kind, records in self.org.records.items()
        }

    def new_id(self, prefix: str) -> str:
        """A fresh id with this key prefix, from the same sequence as the org's records."""
        return self.org.new_id(prefix)

    # --- user actions in the Salesforce UI -----------------------------------------------------

    def user_creates_lead(self, email: str, status: str = "Open - Not Contacted") -> str:
        fields: Record = {
            "LastName": "Lovelace",
            "Company": "Analytical Engines",
            "Email": email,
            "Status": status,
        }
        return self.org.create_lead(fields, actor=self.human_user_id)

    def user_sets_status(self, lead_id: str, status: str) -> None:
        self.org.update_lead(lead_id, {"Status": status}, actor=self.human_user_id)

    def user_converts(self, lead_id: str) -> Conversion:
        """Convert a lead (Convert button): account, contact and an opportunity at Prospecting."""
        return self.org.convert_lead(lead_id, actor=self.human_user_id)

    def user_sets_opportunity_stage(self, opportunity_id: str, stage: str) -> None:
        self.org.set_opportunity_stage(opportunity_id, stage, actor=self.human_user_id)
