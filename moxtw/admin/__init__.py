"""Operator tools over the configuration: the DNS records a domain needs (records), the
check of what DNS serves against them (dnscheck), changes to accounts, domains,
addresses and aliases (configedit), and the quickstart that writes a first config
(quickstart). Used by the ``moxtw`` command, the control socket, and later the admin
web pages; nothing here runs on the reactor thread except through those callers.
"""
