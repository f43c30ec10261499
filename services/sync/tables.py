"""The sync service's tables. They stay inside this service; the wire schema is never a table."""

from datetime import datetime
from uuid import UUID

from sqlalchemy import DateTime
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class SyncTable(SQLModel, registry=registry()):
    """Base of this service's tables, on a metadata of its own (migrated on its own)."""


metadata = SyncTable.metadata


class LeadRow(SyncTable, table=True):
    """The canonical lead's current state; `version` guards concurrent updates."""

    __tablename__ = "sync_lead"

    id: UUID = Field(primary_key=True)
    stage: str | None = Field(default=None, max_length=32)
    version: int = Field(default=0)
    owner_id: str | None = Field(default=None, max_length=255)
    campaign: str | None = Field(default=None, max_length=255)
    lead_source: str | None = Field(default=None, max_length=255)
    origin_system: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(sa_type=DateTime(timezone=True))


class LeadLinkRow(SyncTable, table=True):
    """One platform record that is a lead: how events find their lead."""

    __tablename__ = "sync_lead_link"

    system: str = Field(primary_key=True, max_length=32)
    record_id: str = Field(primary_key=True, max_length=255)
    object_type: str = Field(max_length=32)
    lead_id: UUID = Field(foreign_key="sync_lead.id", index=True)


class InboxRow(SyncTable, table=True):
    """Source events already processed; written in the same transaction as their effects."""

    __tablename__ = "sync_inbox"

    source: str = Field(primary_key=True, max_length=32)
    idempotency_key: str = Field(primary_key=True, max_length=512)
    event_id: UUID
    processed_at: datetime = Field(sa_type=DateTime(timezone=True))
