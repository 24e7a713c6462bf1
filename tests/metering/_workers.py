"""Code run in separate processes by the concurrency tests (importable, so spawn can run it)."""

import random
import time

from nacl.signing import SigningKey

from prover.ledger import Ledger
from prover.metering import Meter, UsageRequest
from prover.ratecard import loads_rate_card


def ingest(url, seed, card_text, keys, barrier, batch, shuffle_seed):
    """Record reported-count events for ``keys``, ``batch`` at a time; before each batch both
    processes meet at ``barrier``, so they really send the same keys at the same time.
    Returns the keys this process stored for the first time, and the (start, end) wall-clock
    interval of each record_batch call."""
    key = SigningKey(seed)
    ledger = Ledger.from_url(url, provider_id=bytes(key.verify_key), run_migrations=False)
    meter = Meter(ledger=ledger, signing_key=key, rate_card=loads_rate_card(card_text))
    rng = random.Random(shuffle_seed)
    fresh, intervals = [], []
    try:
        for i in range(0, len(keys), batch):
            chunk = keys[i : i + batch]
            rng.shuffle(chunk)
            barrier.wait(60)
            requests = [UsageRequest(k, f"user-{int(k.split('-')[1]) % 7}", "gpt-4o",
                                     input_tokens=int(k.split("-")[1]) % 50 + 1,
                                     output_tokens=3) for k in chunk]
            start = time.time()
            outcomes = meter.record_batch(requests)
            intervals.append((start, time.time()))
            for k, outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    raise outcome
                if not outcome.replayed:
                    fresh.append(k)
    finally:
        ledger.dispose()
    return fresh, intervals
