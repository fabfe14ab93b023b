"""The common library of the ledger's services, in layers that import only downward:
``cli`` over ``web`` over ``contracts`` over ``core``. Nothing here imports or names a
service: services register themselves (see :mod:`shared.web.registry`)."""
