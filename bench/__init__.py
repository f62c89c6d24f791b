"""gptj-bench measurement, CLI and reports."""
