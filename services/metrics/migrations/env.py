from alembic import context

from onefunnel.metrics.tables import metadata
from onefunnel.shared.database import run_migrations

run_migrations(context, metadata)
