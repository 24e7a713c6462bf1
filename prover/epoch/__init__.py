"""Epoch close: snapshot, padding, commitments, range proofs, Merkle tree, bundle, openings."""
