"""Backups with restic: every site's files and database, the toolkit's state, restores proven.

repository.py runs restic (and nothing else does); records.py keeps repositories
and snapshots in the store; hosts.py and stream.py work on the sites' hosts;
run.py, restore.py and verify.py are the three commands; status.py feeds the
audit and the usage report. See docs/backups.md.
"""
