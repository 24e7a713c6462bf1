"""Rate card: strict parsing, integer pricing, canonical hash independent of formatting."""

import pytest

from prover.errors import InvalidRequestError, RateCardError, UnpricedModelError
from prover.ratecard import (
    DEFAULT_RATE_CARD,
    RATE_CARD_DOMAIN,
    Prices,
    load_rate_card,
    loads_rate_card,
)

CARD = """
version = 2
unit = "u"
[models."gpt-4o"]
input = 3
cached_input = 1
output = 10
reasoning = 7
[models."gpt-4o-*"]
input = 4
cached_input = 2
output = 11
reasoning = 8
[models."gpt-4o-mini-*"]
input = 1
cached_input = 1
output = 1
reasoning = 1
"""


def test_packaged_default_parses():
    card = load_rate_card(DEFAULT_RATE_CARD)
    assert card.version >= 1 and "gpt-4o" in card.models
    assert len(card.hash()) == 32


def test_units_are_integer_and_split_cached_input():
    p = Prices(input=3, cached_input=1, output=10, reasoning=7)
    assert p.units(input_tokens=100, cached_input_tokens=40, output_tokens=5,
                   reasoning_tokens=2) == 60 * 3 + 40 * 1 + 5 * 10 + 2 * 7
    with pytest.raises(InvalidRequestError):
        p.units(input_tokens=1, cached_input_tokens=2, output_tokens=0, reasoning_tokens=0)


def test_exact_then_longest_prefix():
    card = loads_rate_card(CARD)
    assert card.prices_for("gpt-4o").input == 3
    assert card.prices_for("gpt-4o-2024").input == 4
    assert card.prices_for("gpt-4o-mini-2024").input == 1
    for model in ("gpt-4", "gpt-4o2", "x"):
        with pytest.raises(UnpricedModelError):
            card.prices_for(model)


def test_hash_ignores_formatting_and_order_but_not_content():
    card = loads_rate_card(CARD)
    reordered = loads_rate_card("""
# comment
unit="u"
version=2
[models."gpt-4o-mini-*"]
reasoning=1
output=1
cached_input=1
input=1
[models."gpt-4o-*"]
input=4
cached_input=2
output=11
reasoning=8
[models."gpt-4o"]
output=10
input=3
reasoning=7
cached_input=1
""")
    assert reordered.hash() == card.hash()
    assert card.canonical_bytes().startswith(RATE_CARD_DOMAIN)
    for old, new in (("version = 2", "version = 3"), ('unit = "u"', 'unit = "v"'),
                     ("reasoning = 7", "reasoning = 6"), ('"gpt-4o-*"', '"gpt-4o-x*"')):
        assert loads_rate_card(CARD.replace(old, new, 1)).hash() != card.hash()


@pytest.mark.parametrize(("old", "new"), [
    ("version = 2", "version = 0"), ("version = 2", 'version = "2"'), ("version = 2", ""),
    ('unit = "u"', ""), ('unit = "u"', 'unit = ""'), ("input = 3", "input = -3"),
    ("input = 3", "input = 3.5"), ("input = 3", "input = true"), ("input = 3", ""),
    ("input = 3", "input = 4294967296"), ("reasoning = 7", "reasoning = 7\nbonus = 1"),
    ("version = 2", "version = 2\ncurrency = 1"), ('[models."gpt-4o"]', '[models."gpt*4o"]'),
    ('[models."gpt-4o"]', '[models."*"]'), ("version = 2", "version = = 2"),
])
def test_malformed_cards_are_refused(old, new):
    with pytest.raises(RateCardError):
        loads_rate_card(CARD.replace(old, new, 1))


def test_no_models_or_unreadable_file(tmp_path):
    with pytest.raises(RateCardError):
        loads_rate_card('version = 1\nunit = "u"\n')
    with pytest.raises(RateCardError):
        loads_rate_card('version = 1\nunit = "u"\nmodels = 3\n')
    with pytest.raises(RateCardError):
        load_rate_card(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(RateCardError):
        load_rate_card(tmp_path / "bin.toml")
