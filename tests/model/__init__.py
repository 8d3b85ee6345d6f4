"""The adversarial suite: models of the client's contract, liveness, faults and soak."""
