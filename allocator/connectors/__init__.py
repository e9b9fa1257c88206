"""Connectors: make the systems that own the GPUs enforce what the ledger says (PRODUCT.md
section 9). This package imports the domain (allocator, org, audit); the domain never imports it.
"""
