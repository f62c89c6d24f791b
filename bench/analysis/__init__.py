"""Pure analysis shared by measurement and reports: HLO collectives, wire bytes, the analytic communication model,
FLOP formulas, memory. No JAX import: these take text, shapes and numbers."""
