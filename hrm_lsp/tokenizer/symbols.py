"""The single list of special symbols shared by both tokenizers, data, training and inference.

Names are a contract (they appear in shards, model files and prompts). Order matters for the
byte tokenizer (ids 256 + index) and for SentencePiece (user-defined symbols in this order).
"""

from __future__ import annotations

PAD = "<pad>"  # id 0 in both modes; the loss ignores it (seed 000: ignore_index=0)
EOT = "<EOT>"

# Seed 004's user-defined symbols, verbatim.
PLAN_SYMBOLS = (
    "<PLAN>",
    "</PLAN>",
    "<STEP>",
    "<INTENT:FIX>",
    "<INTENT:ADD>",
    "<INTENT:REFACTOR>",
    "<TARGET:func>",
    "<TARGET:type>",
    "<VALIDATE>",
    "<SYNTAX_OK>",
    "<TEST_PASS>",
    "<REFINE>",
)
FIM_SYMBOLS = ("<FIM_PREFIX>", "<FIM_SUFFIX>", "<FIM_MIDDLE>")
DIAG_SYMBOLS = ("<DIAG>", "</DIAG>")

# Everything but PAD, in id order after PAD for the byte tokenizer.
SPECIALS = (EOT, *PLAN_SYMBOLS, *FIM_SYMBOLS, *DIAG_SYMBOLS)

INTENTS = ("FIX", "ADD", "REFACTOR")
TARGETS = ("func", "type")
