"""Billing: customers, prices, subscriptions, invoices and test clocks on top of metering.

A second bounded context in the layer. It reads usage only through metering's public
functions (`metering.usage`, `metering.meters.load`) and metering never imports it.
"""
