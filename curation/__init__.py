"""Dataset curation for CLIP-style pretraining: query list → caption matching → balancing → download → card.

Each stage is a pure function over files behind the thin `curation` CLI (see `curation.cli`).
"""
