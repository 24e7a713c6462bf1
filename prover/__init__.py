"""zkmeter prover: the metering service, epoch close and settlement client (the server stack)."""
