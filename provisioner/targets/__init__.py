"""Targets: where a site's parts live (IP, database, web server, DNS).

Each target reads its live state in bulk, turns desired-versus-live into
Changes, and applies a set of sites at once.
"""
