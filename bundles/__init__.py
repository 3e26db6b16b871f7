"""The bundles shipped with medguide, one folder each (``<name>/configs``, ``docs``, ``LICENSE``).

Installed as ``medguide.bundles`` (setup.cfg maps it onto this folder), so ``medguide`` finds them in a wheel
install as in a checkout.
"""
