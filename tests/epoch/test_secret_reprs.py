"""Secrets never appear in a repr: a proof job, a planned leaf and an opening print no value,
blinding or seed (docs/security.md)."""

from prover.epoch.executor import LeafJob
from verifier.opening import Opening

VALUE = 987_654_321
BLINDING = 0x1234_5678_9ABC_DEF0_1357_9BDF_2468_ACE0
SEED = bytes(range(100, 132))


def _shows_no_secret(text: str) -> None:
    for secret in (str(VALUE), str(BLINDING), hex(BLINDING), f"{BLINDING:x}", repr(SEED),
                   SEED.hex()):
        assert secret not in text


def test_a_proof_job_repr_shows_no_value_blinding_or_seed():
    job = LeafJob(b"\x07" * 32, VALUE, BLINDING, SEED)
    _shows_no_secret(repr(job))
    _shows_no_secret(str(job))
    assert "tag" in repr(job)


def test_an_opening_repr_shows_no_value_or_blinding():
    opening = Opening(epoch_id=3, tag=b"\x07" * 32, value=VALUE, blinding=BLINDING,
                      leaf_index=1, path=(b"\x01" * 32,))
    _shows_no_secret(repr(opening))
