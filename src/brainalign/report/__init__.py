"""Report: aggregation tables, correlations, figures, the paper."""
