from alembic import context

from onefunnel.shared.database import run_migrations
from onefunnel.sync.tables import metadata

run_migrations(context, metadata)
