"""Shared package of the metering service: domain, storage and Stripe wire layer."""
