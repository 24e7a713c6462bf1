"""Wiring: the domain services of one provider, built from the configuration."""

from dataclasses import dataclass

from prover.accounts.escrow import EscrowSource
from prover.accounts.registry import AccountRegistry
from prover.config import Settings
from prover.epoch.service import EpochParams, EpochService
from prover.epoch.storage import EpochStore
from prover.metering import Meter


@dataclass
class Services:
    """Everything the transports (gRPC, HTTP, CLI) call into."""

    settings: Settings
    meter: Meter
    epochs: EpochService
    store: EpochStore
    accounts: AccountRegistry

    def close(self) -> None:
        """Release database connections."""
        self.meter.ledger.dispose()


def build_services(settings: Settings | None = None, *,
                   escrow: EscrowSource | None = None) -> Services:
    """Open the ledger (migrating it), and build the meter, the account register and the
    epoch service; ``escrow`` sets the prepaid limits (None: no limits)."""
    settings = settings or Settings()
    meter = Meter.from_settings(settings, escrow=escrow)
    store = EpochStore(meter.ledger.engine)
    accounts = AccountRegistry(meter.ledger.engine, operator=settings.operator_bytes(),
                               provider_key=meter.provider_id)
    params = EpochParams(
        chain_id=settings.chain_id, contract=settings.contract_bytes(),
        bit_size=settings.bit_size, min_leaves=settings.min_leaves,
        rate_card_hash=meter.rate_card_hash, epoch_seconds=settings.epoch_seconds,
        proof_workers=settings.proof_workers, ray_address=settings.ray_address,
        allow_empty=settings.allow_empty_epochs,
        plaintext_opening_retention_days=settings.plaintext_opening_retention_days,
        ray_tls=settings.ray_tls(), ray_allow_plaintext=settings.ray_allow_plaintext,
        operator=settings.operator_bytes())
    epochs = EpochService(ledger=meter.ledger, store=store,
                          signing_key=settings.load_signing_key(), params=params)
    return Services(settings=settings, meter=meter, epochs=epochs, store=store,
                    accounts=accounts)
