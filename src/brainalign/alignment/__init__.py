"""Model-brain alignment: nested-CV ridge regression, RDMs and RSA, aggregation."""
