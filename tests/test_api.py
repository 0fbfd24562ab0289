"""The Python API's names stay what they are: importing any part of the package never replaces them.

(A subpackage named like an API function, imported lazily, would rebind the package's attribute to the
module on its first import: `batchlab.suggest(...)` then worked once per process.)"""

import importlib
import pkgutil

import batchlab
from batchlab import api


def test_every_api_name_is_the_api_function_after_importing_every_module():
    for module in pkgutil.walk_packages(batchlab.__path__, "batchlab."):
        if module.name != "batchlab.__main__":  # (runs the command line)
            importlib.import_module(module.name)
    for name in batchlab.__all__:
        if name != "__version__":
            assert getattr(batchlab, name) is getattr(api, name), name
