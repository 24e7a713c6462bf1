"""zkmeter verifier: checks bundles, receipts, openings and the chain without the server stack."""
