"""What normalizing and encoding cost per event, in one process, without HTTP or a broker.

    .venv/bin/python bench/ingest_normalize.py

Times, on the ingest benchmark's 50-event HubSpot delivery (timeit, best of `--repeat`):
- `HubSpot.normalize`, as ingest runs it;
- the same with `SourceEvent` and `Changes` replaced by `dict` in the HubSpot adapter: the same checks
  and values, no model, so what the adapter's own Python costs;
- `envelope.encode` of the normalized events.
"""

import argparse
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

from ingest_deliveries import SECRET, Deliveries

from onefunnel.ingest.platforms import hubspot
from onefunnel.ingest.platforms.base import Delivery
from onefunnel.ingest.webhooks import CE_SOURCE
from onefunnel.shared import envelope
from onefunnel.shared.stage_mapping import load_stage_mapping

BATCH = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--number", type=int, default=2000, help="deliveries per timing")
    parser.add_argument("--repeat", type=int, default=5, help="timings; the best is kept")
    args = parser.parse_args()

    body, _ = Deliveries(batch=BATCH, public_base_url="http://bench", host="bench", first_event_id=1).body()
    delivery = Delivery(method="POST", url="", headers={}, query={}, body=body, received_at=datetime.now(UTC))
    adapter, mapping = hubspot.HubSpot(client_secrets=[SECRET]), load_stage_mapping()
    events = adapter.normalize(delivery, mapping).events

    def per_event(work: Callable[[], object]) -> float:
        best = min(timeit.repeat(work, number=args.number, repeat=args.repeat))
        return best / args.number / BATCH * 1e6

    def normalize() -> object:
        return adapter.normalize(delivery, mapping)

    def encode() -> object:
        return [envelope.encode(event, source=CE_SOURCE) for event in events]

    print(f"µs per event, best of {args.repeat} x {args.number} deliveries of {BATCH}:")
    print(f"  normalize                          {per_event(normalize):6.1f}")
    print(f"  encode                             {per_event(encode):6.1f}")
    hubspot.SourceEvent, hubspot.Changes = dict, dict  # type: ignore[misc,assignment]
    print(f"  normalize, models replaced by dict {per_event(normalize):6.1f}")


if __name__ == "__main__":
    main()
