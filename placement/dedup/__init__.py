"""Placement for de-duplicated dispatch: fitted on per-token routing (co-activation, origins)."""
