"""The repository index: ∞-gram estimates over the code a completion sits in (docs/index.md).

Knows no editor: the server hands it workspace folders, open documents' text and file
events; inference asks it for a ``Query`` per request.
"""

from hrm_lsp.index.mix import MixWeights, default_weights
from hrm_lsp.index.suffix import Match, SuffixIndex
from hrm_lsp.index.tiers import TIERS, Estimate, Query, RepoIndex

__all__ = ["TIERS", "Estimate", "Match", "MixWeights", "Query", "RepoIndex", "SuffixIndex",
           "default_weights"]
