"""The public HTTP read side (FastAPI): closed epochs, bundles, sealed openings, provider,
health; OpenAPI at ``/openapi.json`` and ``/docs``. docs/api.md lists the routes. Prometheus
metrics are a separate app (:func:`create_metrics_app`) on the operator's own listener.

Transport only: validate the path and query (strict types and bounds, so bad input is a 4xx,
never a 500), call the storage reads (prover/epoch/storage.py) and the meter, convert to the
API models below (never the domain dataclasses, so no internal field leaks), and answer every
error as ``{"detail": ...}`` from one exception handler. Routes are plain functions: FastAPI
runs them in its threadpool, so blocking database calls never stall the event loop. Nothing
here reads a request body, and nothing is logged about requests.
"""

import logging
import re
from typing import Annotated, Any, Literal, get_args

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from prover.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from prover.api.metrics import app_registry, render
from prover.app import Services
from prover.epoch.storage import EpochStore, EpochSummary
from prover.errors import LedgerError

log = logging.getLogger(__name__)

API_VERSION = "1"
MAX_EPOCH_ID = (1 << 63) - 1  # epoch ids are signed 64-bit in the database
MAX_PAGE = 500
DEFAULT_PAGE = 100
TAG_PATTERN = r"^(0x)?[0-9a-fA-F]{64}$"
OCTET_STREAM = "application/octet-stream"


# --- API models (the wire form; hex with 0x, times in Unix milliseconds) ---------------------

class ErrorOut(BaseModel):
    """Every error body."""

    detail: Any = Field(description="What went wrong (a string, or a list for bad input).")


EpochState = Literal["open", "closing", "closed"]


class EpochOut(BaseModel):
    """One epoch and its close."""

    epoch_id: int
    state: EpochState
    window_start_ms: int
    window_end_ms: int | None = Field(description="Set once the epoch is closing.")
    planned_end_ms: int
    rate_card_hash: str
    bit_size: int
    leaves_done: int | None = Field(description="Leaves proved so far (once the close started).")
    leaves_total: int | None = Field(description="Leaves of the padded epoch (once started).")
    published: bool = Field(description="The bundle and sealed openings are available.")
    merkle_root: str | None = Field(description="Set once published.")
    total_units: int | None = Field(description="Sum of all users' units; once published.")


class EpochPage(BaseModel):
    """A page of epochs, newest first."""

    epochs: list[EpochOut]
    next_before: int | None = Field(
        description="Pass as ?before= for the next page; null on the last page.")


class SealedOpeningOut(BaseModel):
    """One sealed opening (a NaCl sealed box to the user's X25519 key)."""

    epoch_id: int
    tag: str
    sealed: str


class AccountBundleOut(BaseModel):
    """One billing account's bundle of an epoch (public: its total, padded leaf count and
    root are on-chain once submitted)."""

    account_id: str
    leaves: int
    total_units: int | None = Field(description="Set once published.")
    merkle_root: str | None = Field(description="Set once published.")
    bundle: str = Field(description="Path of the account's bundle.")
    statement: str = Field(description="Path of the sealed payer statement.")


class PricesOut(BaseModel):
    """Billable units per token of each class."""

    input: int
    cached_input: int
    output: int
    reasoning: int


class RateCardOut(BaseModel):
    """The rate card in force for new epochs."""

    version: int
    unit: str
    hash: str
    models: dict[str, PricesOut]


class ProviderOut(BaseModel):
    """Who signs the receipts and bundles, and where epochs settle."""

    provider_id: str = Field(description="The provider's Ed25519 public key.")
    chain_id: int
    contract_address: str
    bit_size: int
    rate_card: RateCardOut


class HealthOut(BaseModel):
    """Liveness and database reachability."""

    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]


# --- dependencies and conversions -----------------------------------------------------------

def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _store(request: Request) -> EpochStore:
    return _services(request).store


ServicesDep = Annotated[Services, Depends(_services)]
StoreDep = Annotated[EpochStore, Depends(_store)]
_DIGITS = re.compile(r"[0-9]+")


def strict_int(value: Any) -> Any:
    """Only plain ASCII digits are an integer on the wire: ``1.0``, `` 1``, ``1 ``, ``\\n1``,
    ``1_0``, ``+1`` and ``١`` are refused (pydantic's lax mode would read them as numbers)."""
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError("must be a decimal integer (ASCII digits only)")
    return value


Digits = BeforeValidator(strict_int)  # beside Path/Query, not nested: keeps their schema
EpochId = Annotated[int, Path(ge=0, le=MAX_EPOCH_ID, description="Epoch id.", examples=[1]),
                    Digits]
AccountId = Annotated[str, Path(pattern=TAG_PATTERN, examples=["0x" + "cd" * 32],
                                description="Billing account id: 32 bytes as 64 hex "
                                            "characters, 0x optional.")]
Tag = Annotated[str, Path(pattern=TAG_PATTERN, examples=["0x" + "ab" * 32],
                          description="Leaf tag: 32 bytes as 64 hex characters, 0x optional.")]


class NotFound(LookupError):
    """A resource that does not exist (yet): answered 404."""


class Ambiguous(LookupError):
    """A single-bundle read of an epoch that billed several accounts: answered 409."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def parse_tag(text: str) -> bytes:
    """A leaf tag from 64 hex characters (0x optional); the route's pattern already checked."""
    raw = text[2:] if text.startswith("0x") else text
    return bytes.fromhex(raw)


def _state(value: str) -> EpochState:
    for known in get_args(EpochState):
        if known == value:
            return known  # type: ignore[no-any-return]
    raise ValueError(f"unknown epoch state {value!r}")


def epoch_out(summary: EpochSummary) -> EpochOut:
    """The wire form of an epoch summary."""
    close, epoch = summary.close, summary.epoch
    published = close is not None and close.finished
    return EpochOut(
        epoch_id=epoch.id, state=_state(epoch.state),
        window_start_ms=epoch.window_start_ms, window_end_ms=epoch.window_end_ms,
        planned_end_ms=epoch.planned_end_ms, rate_card_hash=_hex(epoch.rate_card_hash),
        bit_size=epoch.bit_size,
        leaves_done=None if close is None else close.leaves_done,
        leaves_total=None if close is None else close.leaves_total,
        published=published,
        merkle_root=None if close is None or close.merkle_root is None
        else _hex(close.merkle_root),
        total_units=close.total_units if published and close is not None else None)


def _find(store: EpochStore, epoch_id: int) -> EpochSummary:
    # The open epoch is not public: it exists from the first request on, so showing it would
    # tell when traffic began (docs/security.md). It appears once its close begins.
    found = store.summaries(limit=1, epoch_id=epoch_id, closed_only=True)
    if not found:
        raise NotFound(f"no closed epoch {epoch_id}")
    return found[0]


def _published(store: EpochStore, epoch_id: int) -> None:
    """Raise NotFound unless ``epoch_id`` exists and is published."""
    summary = _find(store, epoch_id)
    if summary.close is None or not summary.close.finished:
        raise NotFound(f"epoch {epoch_id} is not published yet")


def _wants_octets(accept: str | None) -> bool:
    """True if the Accept header prefers application/octet-stream over JSON."""
    best: tuple[float, int] = (0.0, 0)
    choice = False
    for position, item in enumerate((accept or "").split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media in (OCTET_STREAM, "application/json") and (quality, -position) > best:
            best = (quality, -position)
            choice = media == OCTET_STREAM
    return choice and best[0] > 0


# --- errors: one handler ----------------------------------------------------------------------

def _error(request: Request, exc: Exception) -> JSONResponse:
    """Every error as ``{"detail": ...}``; database trouble is 503, anything else unexpected
    500 without internals."""
    if isinstance(exc, HTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)
    if isinstance(exc, RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)
    if isinstance(exc, NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)
    if isinstance(exc, Ambiguous):
        return JSONResponse({"detail": str(exc)}, status_code=409)
    if isinstance(exc, SQLAlchemyError | LedgerError):
        log.warning("http: database error on %s: %s", request.url.path, type(exc).__name__)
        return JSONResponse({"detail": "the database is unavailable"}, status_code=503)
    log.error("http: unexpected %s on %s", type(exc).__name__, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "Unknown epoch, not published, or no such tag "
                                            "or account."},
    409: {"model": ErrorOut, "description": "The epoch billed several accounts: read each "
                                            "account's bundle."},
    503: {"model": ErrorOut, "description": "The database is unavailable."},
}


# --- the app ---------------------------------------------------------------------------------

def create_http_app(services: Services) -> FastAPI:
    """The public read API over ``services`` (no lifespan: the caller owns the services)."""
    # redirect_slashes=False: an unknown path such as /v1/epochs/ is a 404, not a redirect.
    app = FastAPI(title="zkmeter public API", version=API_VERSION, redirect_slashes=False,
                  description="Public read side: epochs, bundles, sealed openings, provider "
                              "keys and rate card, health. Nothing here changes between "
                              "two publications (operational metrics are on the operator's "
                              "own listener, ZKMETER_METRICS_BIND).")
    app.state.services = services
    for kind in (HTTPException, RequestValidationError, NotFound, Ambiguous, SQLAlchemyError,
                 LedgerError, Exception):
        app.add_exception_handler(kind, _error)

    @app.get("/v1/epochs", response_model=EpochPage, tags=["epochs"],
             responses={503: ERRORS[503]})
    def list_epochs(
        store: StoreDep,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE), Digits] = DEFAULT_PAGE,
        before: Annotated[int | None, Query(ge=1, le=MAX_EPOCH_ID,
                                            description="Only epochs with a smaller id.")
                          ] = None,
    ) -> EpochPage:
        """Epochs, newest first: state, window, close progress, root and total once
        published."""
        found = store.summaries(limit=limit, before=before, closed_only=True)
        more = len(found) == limit and found[-1].epoch.id > 1
        return EpochPage(epochs=[epoch_out(s) for s in found],
                         next_before=found[-1].epoch.id if more else None)

    @app.get("/v1/epochs/{epoch_id}", response_model=EpochOut, tags=["epochs"],
             responses=ERRORS)
    def get_epoch(store: StoreDep, epoch_id: EpochId) -> EpochOut:
        """One epoch."""
        return epoch_out(_find(store, epoch_id))

    @app.get("/v1/epochs/{epoch_id}/bundle", tags=["epochs"], response_class=Response,
             responses={200: {"description": "The bundle JSON as published (docs/epoch.md).",
                              "content": {"application/json": {"schema": {"type": "object"}}}},
                        **ERRORS})
    def get_bundle(store: StoreDep, epoch_id: EpochId) -> Response:
        """The published bundle of an epoch that billed one account, byte for byte as stored
        and signed (an epoch of several accounts: 409, see ``/accounts``)."""
        raw = store.bundle_json(epoch_id)
        if raw is None:
            _published(store, epoch_id)  # says which: unknown or not yet published
            billed = len(store.account_bundles(epoch_id))
            if billed == 0:
                raise NotFound(f"epoch {epoch_id} billed no account: it has no bundle")
            raise Ambiguous(f"epoch {epoch_id} billed {billed} accounts: each has its own "
                            f"bundle, listed at /v1/epochs/{epoch_id}/accounts")
        return Response(content=raw, media_type="application/json")

    @app.get("/v1/epochs/{epoch_id}/accounts", response_model=list[AccountBundleOut],
             tags=["epochs"], responses=ERRORS)
    def list_accounts(store: StoreDep, epoch_id: EpochId) -> list[AccountBundleOut]:
        """The billing accounts of a published epoch, one bundle each, by account id."""
        _published(store, epoch_id)
        base = f"/v1/epochs/{epoch_id}/accounts"
        return [AccountBundleOut(
            account_id=_hex(a.account_id), leaves=a.leaves, total_units=a.total_units,
            merkle_root=None if a.merkle_root is None else _hex(a.merkle_root),
            bundle=f"{base}/{_hex(a.account_id)}/bundle",
            statement=f"{base}/{_hex(a.account_id)}/statement")
            for a in store.account_bundles(epoch_id)]

    @app.get("/v1/epochs/{epoch_id}/accounts/{account_id}/bundle", tags=["epochs"],
             response_class=Response,
             responses={200: {"description": "The account's bundle JSON as published.",
                              "content": {"application/json": {"schema": {"type": "object"}}}},
                        **ERRORS})
    def get_account_bundle(store: StoreDep, epoch_id: EpochId,
                           account_id: AccountId) -> Response:
        """One account's published bundle, byte for byte as stored and signed."""
        account = parse_tag(account_id)
        raw = store.account_bundle_json(epoch_id, account)
        if raw is None:
            _published(store, epoch_id)
            raise NotFound(f"epoch {epoch_id} has no bundle of account {_hex(account)}")
        return Response(content=raw, media_type="application/json")

    @app.get("/v1/epochs/{epoch_id}/accounts/{account_id}/statement", tags=["epochs"],
             response_class=Response,
             responses={200: {"description": "The sealed payer statement (a NaCl sealed box "
                                             "to the payer's X25519 key).",
                              "content": {OCTET_STREAM: {
                                  "schema": {"type": "string", "format": "binary"}}}},
                        **ERRORS})
    def get_statement(store: StoreDep, epoch_id: EpochId, account_id: AccountId) -> Response:
        """One account's sealed payer statement: anyone may fetch it, only the payer's key
        opens it; its size depends on the public leaf count only."""
        account = parse_tag(account_id)
        box = store.statement(epoch_id, account)
        if box is None:
            _published(store, epoch_id)
            raise NotFound(f"epoch {epoch_id} has no statement of account {_hex(account)}")
        return Response(content=box, media_type=OCTET_STREAM)

    @app.get("/v1/epochs/{epoch_id}/accounts/{account_id}/openings",
             response_model=dict[str, str], tags=["openings"], responses=ERRORS)
    def list_account_openings(store: StoreDep, epoch_id: EpochId,
                              account_id: AccountId) -> dict[str, str]:
        """The sealed openings of one account's bundle, ``{tag: sealed}`` in hex."""
        _published(store, epoch_id)
        account = parse_tag(account_id)
        found = store.sealed_openings(epoch_id, account)
        if not found:
            raise NotFound(f"epoch {epoch_id} has no bundle of account {_hex(account)}")
        return {_hex(tag): _hex(box) for tag, box in sorted(found.items())}

    @app.get("/v1/epochs/{epoch_id}/openings", response_model=dict[str, str], tags=["openings"],
             responses=ERRORS)
    def list_openings(store: StoreDep, epoch_id: EpochId) -> dict[str, str]:
        """Every sealed opening of a published epoch, ``{tag: sealed}`` in hex (the input of
        ``zkmeter-verify audit --openings``)."""
        _published(store, epoch_id)
        return {_hex(tag): _hex(box) for tag, box in sorted(
            store.sealed_openings(epoch_id).items())}

    @app.get("/v1/epochs/{epoch_id}/openings/{tag}", response_model=SealedOpeningOut,
             tags=["openings"],
             responses={200: {"content": {OCTET_STREAM: {
                 "schema": {"type": "string", "format": "binary"}}},
                 "description": "JSON, or the raw sealed box with Accept: "
                                "application/octet-stream."}, **ERRORS})
    def get_opening(store: StoreDep, request: Request, epoch_id: EpochId,
                    tag: Tag) -> SealedOpeningOut | Response:
        """One sealed opening: anyone may fetch it, only the user's X25519 key opens it."""
        leaf = parse_tag(tag)
        box = store.sealed_opening(epoch_id, leaf)
        if box is None:
            _published(store, epoch_id)
            raise NotFound(f"no sealed opening for tag {_hex(leaf)} in epoch {epoch_id}")
        if _wants_octets(request.headers.get("accept")):
            return Response(content=box, media_type=OCTET_STREAM)
        return SealedOpeningOut(epoch_id=epoch_id, tag=_hex(leaf), sealed=_hex(box))

    @app.get("/v1/provider", response_model=ProviderOut, tags=["provider"])
    def get_provider(services: ServicesDep) -> ProviderOut:
        """The provider's public key, settlement target and rate card."""
        meter, settings = services.meter, services.settings
        card = meter.rate_card
        return ProviderOut(
            provider_id=_hex(meter.provider_id), chain_id=settings.chain_id,
            contract_address=settings.contract_address, bit_size=settings.bit_size,
            rate_card=RateCardOut(
                version=card.version, unit=card.unit, hash=_hex(meter.rate_card_hash),
                models={name: PricesOut(input=p.input, cached_input=p.cached_input,
                                        output=p.output, reasoning=p.reasoning)
                        for name, p in card.models.items()}))

    @app.get("/healthz", response_model=HealthOut, tags=["operations"],
             responses={503: {"model": HealthOut, "description": "The database is down."}})
    def healthz(store: StoreDep) -> JSONResponse:
        """200 when the database answers, else 503."""
        try:
            store.ping()
        except Exception as exc:  # any failure to reach the database is "unavailable"
            log.warning("healthz: database unreachable: %s", type(exc).__name__)
            body = HealthOut(status="unavailable", database="unreachable")
            return JSONResponse(body.model_dump(), status_code=503)
        return JSONResponse(HealthOut(status="ok", database="ok").model_dump())

    _get_only(app)
    return app


def create_metrics_app(services: Services) -> FastAPI:
    """The operator's metrics listener (``ZKMETER_METRICS_BIND``, loopback by default):
    ``GET /metrics`` only. Never served on the public listener: ingest counts and latencies
    move with every request, so a public poller would learn each request's arrival."""
    app = FastAPI(title="zkmeter operator metrics", version=API_VERSION,
                  redirect_slashes=False, openapi_url=None, docs_url=None, redoc_url=None)
    registry = app_registry(services.store.state_counts)

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        """Ingest counts and latencies, epoch states and close progress."""
        return Response(content=render(registry), media_type=METRICS_CONTENT_TYPE)

    _get_only(app)
    return app


def _get_only(app: FastAPI) -> None:
    """GET is the only method: Starlette's own routes (``/openapi.json``, ``/docs``) also
    answer HEAD, which would make them the only paths where a non-GET is not 405."""
    for route in app.router.routes:
        methods = getattr(route, "methods", None)
        if isinstance(methods, set):
            methods.discard("HEAD")
