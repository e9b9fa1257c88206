"""The front end above the domain apps: the pages and APIs that combine several apps (the
overview, the project pages, the navigation, the audit trail scoped by request visibility)."""
