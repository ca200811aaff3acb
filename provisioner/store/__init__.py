"""The state database.

`open_store` (store/database.py) opens it through SQLAlchemy, migrating it to the
newest schema; every command that changes state uses it. provisioner/listing.py
reads the few tables the listing commands show with the database's own driver.

The names are forwarded on first use, not imported here: importing SQLAlchemy
costs more than a whole listing, and the listing reads import store/migrate.py
(the head revision), which loads this package first.
"""

_FORWARDED = {"open_store": "provisioner.store.database", "Store": "provisioner.store.database"}


def __getattr__(name):
    if name in _FORWARDED:
        import importlib

        return getattr(importlib.import_module(_FORWARDED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
