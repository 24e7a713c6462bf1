"""Wiring: the domain services of one provider, built from the configuration."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prover.accounts.escrow import EscrowSource
from prover.accounts.registry import AccountRegistry
from prover.config import Settings
from prover.epoch.service import EpochParams, EpochService
from prover.epoch.storage import EpochStore
from prover.metering import Meter

if TYPE_CHECKING:
    from prover.accounts.chain_escrow import ChainEscrow


@dataclass
class Services:
    """Everything the transports (gRPC, HTTP, CLI) call into."""

    settings: Settings
    meter: Meter
    epochs: EpochService
    store: EpochStore
    accounts: AccountRegistry
    chain_escrow: "ChainEscrow | None" = None  # on-chain prepaid limits (ZKMETER_RPC_URL)

    def close(self) -> None:
        """Release database connections; stop the escrow event follower."""
        if self.chain_escrow is not None:
            self.chain_escrow.close()
        self.meter.ledger.dispose()


def build_services(settings: Settings | None = None, *,
                   escrow: EscrowSource | None = None) -> Services:
    """Open the ledger (migrating it), and build the meter, the account register and the
    epoch service; ``escrow`` sets the prepaid limits (None: the escrow on-chain if
    ZKMETER_RPC_URL is set, with its event follower running, else no limits)."""
    settings = settings or Settings()
    chain_escrow = None
    if escrow is None and settings.rpc_url is not None:
        from prover.accounts.chain_escrow import ChainEscrow  # web3 only when used

        escrow = chain_escrow = ChainEscrow.from_settings(settings)
    try:
        return _build(settings, escrow, chain_escrow)
    except BaseException:
        if chain_escrow is not None:
            chain_escrow.close()
        raise


def _build(settings: Settings, escrow: EscrowSource | None,
           chain_escrow: "ChainEscrow | None") -> Services:
    meter = Meter.from_settings(settings, escrow=escrow)
    store = EpochStore(meter.ledger.engine)
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
                          signing_key=settings.load_signing_key(), params=params,
                          onchain_last_epoch=None if chain_escrow is None
                          else chain_escrow.last_epoch_id)
    return Services(settings=settings, meter=meter, epochs=epochs, store=store,
                    accounts=epochs.accounts, chain_escrow=chain_escrow)
