"""The first epoch's window starts on the grid of ZKMETER_EPOCH_SECONDS from unix 0, not at
the first request (issue 12): the public window does not tell when traffic began."""

from prover.ledger import Ledger
from prover.ledger.store import grid_start_ms

PROVIDER = b"\x05" * 32


def test_grid_start():
    assert grid_start_ms(86_400_000 * 3 + 12_345, 86_400) == 86_400_000 * 3
    assert grid_start_ms(7_200_000, 3600) == 7_200_000
    assert grid_start_ms(7_199_999, 3600) == 3_600_000


def test_the_first_window_does_not_depend_on_the_first_requests_time(tmp_path):
    starts = []
    for offset in (17, 1_234_567, 3_599_999):  # first requests at different times in a cell
        now = 1_800_000_000_000 - 1_800_000_000_000 % 3_600_000 + offset
        ledger = Ledger.from_url(f"sqlite:///{tmp_path / f'{offset}.sqlite'}",
                                 provider_id=PROVIDER, clock_ms=lambda now=now: now)
        try:
            info = ledger.open_epoch(rate_card_hash=b"\x01" * 32, bit_size=32,
                                     epoch_seconds=3600)
        finally:
            ledger.dispose()
        starts.append(info.window_start_ms)
        assert info.planned_end_ms - info.window_start_ms == 3_600_000
    assert len(set(starts)) == 1 and starts[0] % 3_600_000 == 0
