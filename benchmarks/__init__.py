"""`make bench`: figures for cost per event, cold start, query cost and bulk throughput."""
