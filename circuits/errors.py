"""The error type of the circuits layer and its documented variants."""


class CircuitsError(Exception):
    """Base class of every error raised by ``circuits``."""


class DecodeError(CircuitsError, ValueError):
    """Bytes at the trust boundary are malformed: wrong length, a coordinate >= p, a point off
    the curve, the identity where it is not allowed, or a scalar >= r."""


class ParameterError(CircuitsError, ValueError):
    """A caller asked for something the protocol does not define (a bit size outside
    {8, 16, 32, 64}, an aggregation size that is not a power of two, mismatched lengths)."""


class ValueOutOfRangeError(CircuitsError, ValueError):
    """The prover was asked to prove a value outside [0, 2^n) or to use an invalid blinding."""


class VerificationError(CircuitsError):
    """A proof did not verify. Deliberately opaque: it never says which equation failed."""

    def __init__(self) -> None:
        super().__init__("proof verification failed")


class BackendError(CircuitsError, RuntimeError):
    """A group backend is unavailable or failed its self-test."""
