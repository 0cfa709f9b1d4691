"""Token weights that flatten the fitted sample's expert popularity (``dedup`` fitted for
another workload).

Which experts are hot is workload-specific (on the ESFT tasks, per-layer expert frequencies
correlate only 0.05-0.13 across tasks), while which experts are chosen *together* carries
over better.  A layout fitted on the sample as it is spends its co-location on the sample's hot
experts and places the others on little evidence.  Weighting every token by how rare its
experts are in the sample makes each expert's co-activation count about equally, as if the
serving workload's popularity were unknown (uniform):

    w_t = mean over the experts e of token t of (f_mean / f_e) ** strength,

with ``f_e`` the routes of expert e in the layer's sample (plus one, so an expert the sample
never uses still has a weight), ``f_mean`` their mean, and the weights scaled to mean 1 so the
objective keeps its unit.  ``strength`` 0 gives every token weight 1 (the sample as it is); 1
flattens popularity fully.
"""

from __future__ import annotations

import numpy as np


def flattened_weights(experts: np.ndarray, num_experts: int, strength: float) -> np.ndarray:
    """Weight of every token of one layer, [tokens] (mean 1); ``experts`` is [tokens, top_k]."""
    T = experts.shape[0]
    if strength == 0 or T == 0:
        return np.ones(T)
    freq = np.bincount(experts.ravel(), minlength=num_experts).astype(np.float64) + 1.0
    w = ((freq.mean() / freq) ** strength)[experts].mean(axis=1)
    return w / w.mean()
