"""One evaluation protocol for every accuracy decision: `protocol` (rows × variants × classical baseline),
`reimage` (cells3d re-imaged as other microscopes would record it) and `variants` (named pipeline
settings). See docs/experiments/2026-12-06-evaluation-protocol.md."""
