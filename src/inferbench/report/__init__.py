"""Stage 3: the long table, summary, findings, plots and documents."""
