"""The seed's use cases UC1-UC9 as runnable scenarios (see nfvha.scenario)."""
