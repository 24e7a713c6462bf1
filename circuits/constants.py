"""Every constant of the zkmeter protocol, each with where it comes from.

Domain tags are exactly 16 bytes and carry a version; changing any of them changes every
generator, challenge or proof, so each change bumps the version.
"""

from typing import Final

# BN254 (alt_bn128), the curve of the EVM precompiles 0x06/0x07/0x08 (EIP-196/197).
# y^2 = x^3 + 3 over F_p; the group of points has prime order R (cofactor 1).
FIELD_MODULUS: Final = 21888242871839275222246405745257275088696311157297823662689037894645226208583
CURVE_ORDER: Final = 21888242871839275222246405745257275088548364400416034343698204186575808495617
CURVE_B: Final = 3

# The standard generator (EIP-196), used as the value base G of Pedersen commitments.
G1_GENERATOR: Final = (1, 2)

# Byte sizes of the encodings (EVM precompile layout, big-endian).
SCALAR_BYTES: Final = 32
POINT_BYTES: Final = 64

# Hash-to-curve of every generator but G (see generators.py and PROTOCOL.md §3).
H2C_DOMAIN: Final = b"ZKMETER_H2G1_V1_"
PEDERSEN_H_LABEL: Final = b"pedersen.H"
BP_G_LABEL: Final = b"bulletproofs.G"
BP_H_LABEL: Final = b"bulletproofs.H"
BP_U_LABEL: Final = b"bulletproofs.U"

# Fiat-Shamir transcript of range proofs (see transcript.py and PROTOCOL.md §4).
RANGE_PROOF_DOMAIN: Final = b"ZKMETER_RANGE_V1"

# Range proof wire format (see rangeproof.py and PROTOCOL.md §5).
RANGE_PROOF_VERSION: Final = 1
ALLOWED_BIT_SIZES: Final = (8, 16, 32, 64)
DEFAULT_BIT_SIZE: Final = 32
MAX_AGGREGATION: Final = 256
